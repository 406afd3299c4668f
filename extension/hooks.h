/*
 * extension/hooks.h
 *
 * The server hooks keysmith installs from _PG_init (extension/keysmith.c):
 * the authentication hook and security-label provider that stop expired
 * leases (extension/leases/auth.c), and log redaction of statements that
 * carry secrets (extension/common/redact.c).
 */
#ifndef KEYSMITH_HOOKS_H
#define KEYSMITH_HOOKS_H

/* The security-label provider of leased roles. */
#define KS_SECLABEL_PROVIDER "keysmith"

/* Authentication hook and security-label provider (extension/leases/auth.c). */
extern void KsAuthInit(void);

/* Log redaction (extension/common/redact.c). */
extern void KsRedactInit(void);

#endif							/* KEYSMITH_HOOKS_H */
