# keysmith: PGXS build of one shared library, keysmith.so.
#
#   make && sudo make install     build and install
#   make demo                     throwaway cluster with the demo (README)
#   make test                     every suite, closing "N passed, N failed"
#
# -Werror is added only by the test build (KEYSMITH_WERROR=1), never by the
# default build.

MODULE_big = keysmith
EXTENSION = keysmith
DATA = extension/keysmith--0.1.sql
PGFILEDESC = "keysmith - envelope encryption and key management"

KMS_OBJS = kms/common.o kms/envelope.o kms/local.o
OBJS = \
	extension/keysmith.o \
	extension/dek_cache.o \
	extension/values.o \
	extension/keys.o \
	extension/counters.o \
	$(KMS_OBJS)

REGRESS = setup envelope errors
REGRESS_OPTS = --inputdir=. --load-extension=keysmith

PG_CONFIG ?= pg_config
PG_CPPFLAGS = -I$(srcdir)/kms
PG_CFLAGS = -Wall -Wextra -Wno-unused-parameter -Wno-missing-field-initializers
ifeq ($(KEYSMITH_WERROR),1)
PG_CFLAGS += -Werror
endif
SHLIB_LINK = -lcrypto

PGXS := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)

# C unit tests of kms/, linked without PostgreSQL.
UNIT_CFLAGS = -O2 -g -Wall -Wextra -Wno-unused-parameter $(if $(filter 1,$(KEYSMITH_WERROR)),-Werror) -Ikms
test/unit/test_kms: test/unit/test_kms.c kms/common.c kms/envelope.c kms/local.c kms/kms.h kms/envelope.h kms/local.h
	$(CC) $(UNIT_CFLAGS) -o $@ test/unit/test_kms.c kms/common.c kms/envelope.c kms/local.c -lcrypto

.PHONY: demo demo-stop test unit
unit: test/unit/test_kms
	./test/unit/test_kms

demo:
	bash test/harness.sh demo

demo-stop:
	bash test/harness.sh demo-stop

test:
	bash test/harness.sh test
