/*
 * test/bench/rotation_peer.c
 *
 * The peer of bench_rotation.sh: the work of one rotation done by hand,
 * N times in one session.  For each role: a fresh random password, its
 * SCRAM verifier computed here (PQencryptPasswordConn, as psql's \password
 * does, so the password itself never reaches SQL text), ALTER ROLE ...
 * PASSWORD with that verifier, then one login over TCP with the password,
 * which must have used it (PQconnectionUsedPassword), as keysmith's test
 * step requires.
 *
 *   rotation_peer "<admin conninfo>" "<login conninfo without user>" PREFIX N
 *
 * Prints the seconds taken; exits non-zero if any step failed.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <libpq-fe.h>

static double
Now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

int
main(int argc, char **argv)
{
	static const char alnum[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
	PGconn	   *admin;
	int			n;
	double		t0;
	FILE	   *rnd;

	if (argc != 5)
	{
		fprintf(stderr, "usage: %s ADMIN_CONNINFO LOGIN_CONNINFO PREFIX N\n", argv[0]);
		return 2;
	}
	n = atoi(argv[4]);
	rnd = fopen("/dev/urandom", "rb");
	admin = PQconnectdb(argv[1]);
	if (rnd == NULL || PQstatus(admin) != CONNECTION_OK)
	{
		fprintf(stderr, "setup failed: %s", PQerrorMessage(admin));
		return 1;
	}
	t0 = Now();
	for (int i = 1; i <= n; i++)
	{
		unsigned char raw[32];
		char		pw[33];
		char		role[64];
		char		sql[512];
		char	   *verifier;
		const char *keys[4] = {"dbname", "user", "password", NULL};
		const char *vals[4];
		PGresult   *res;
		PGconn	   *c;

		if (fread(raw, 1, sizeof(raw), rnd) != sizeof(raw))
			return 1;
		for (int j = 0; j < 32; j++)
			pw[j] = alnum[raw[j] % 62];
		pw[32] = '\0';
		snprintf(role, sizeof(role), "%s%d", argv[3], i);
		verifier = PQencryptPasswordConn(admin, pw, role, "scram-sha-256");
		if (verifier == NULL)
		{
			fprintf(stderr, "PQencryptPasswordConn failed: %s", PQerrorMessage(admin));
			return 1;
		}
		snprintf(sql, sizeof(sql), "ALTER ROLE %s PASSWORD '%s'", role, verifier);
		PQfreemem(verifier);
		res = PQexec(admin, sql);
		if (PQresultStatus(res) != PGRES_COMMAND_OK)
		{
			fprintf(stderr, "ALTER ROLE failed: %s", PQerrorMessage(admin));
			return 1;
		}
		PQclear(res);
		vals[0] = argv[2];
		vals[1] = role;
		vals[2] = pw;
		c = PQconnectdbParams(keys, vals, 1);
		if (PQstatus(c) != CONNECTION_OK || !PQconnectionUsedPassword(c))
		{
			fprintf(stderr, "login as %s failed: %s", role, PQerrorMessage(c));
			return 1;
		}
		PQfinish(c);
	}
	printf("%.3f\n", Now() - t0);
	PQfinish(admin);
	fclose(rnd);
	return 0;
}
