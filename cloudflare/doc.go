// Package cloudflare is tollgate's only way to Cloudflare: an adapter over
// cloudflare-go v6's registrar, zones, workers and accounts service
// packages, and the token broker that keeps the one standing credential out
// of reach.
//
// The Broker holds the parent token (unexported, no getter, redacted from
// Config's String and LogValue) and uses it only to list permission groups,
// to create, list, verify and delete account tokens, and to roll its own
// value. Every registrar, zones or workers call runs in a Session: a token
// minted for that one operation with exactly the permission groups its
// SessionSpec (or built-in Purpose) names, account groups on the account
// and zone groups on exactly the named zones (or all of the account's zones,
// for lookups), expires_on TokenTTL ahead and optionally
// condition.request_ip, used through a client built for that token alone
// and deleted by Close. A Session method the token cannot serve fails
// locally with ErrWrongPurpose, before any request.
//
// The parent token comes from a ParentSource: a value that cannot be
// rewritten (an environment variable) or a TokenFile. Rotate rolls its value
// (PUT tokens/{id}/value), verifies the new one and writes it to the file
// atomically; RunRotation does so on schedule. Every request made with the
// parent token holds a read lock a rotation takes for writing, so no mint is
// ever sent with a value being rolled. A request the parent token is refused
// for (401) re-reads the source once: another process sharing the file may
// have rotated it.
//
// Retries are explicit. cloudflare-go's own retries are off for every
// client. Reads (GETs and the read-only domain-check) retry 429, 5xx and
// transport failures with backoff. Token creation, Worker uploads, version
// uploads, deployments and custom-domain changes retry only a 429, which
// proves the request was refused before acting; a registration is sent
// exactly once. A mutating request whose outcome is unknown returns an error
// wrapping ErrInDoubt, to be reconciled with GetRegistration, GetWorker,
// Versions, Deployments or ListDomains.
//
// Prices cross the package boundary as Cloudflare's exact decimal strings.
// No token value ever appears in a log line, an error or a RequestRecord.
package cloudflare
