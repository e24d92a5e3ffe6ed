// Package cloudflare is tollgate's only way to Cloudflare: an adapter over
// cloudflare-go v6's registrar, workers and accounts service packages, and
// the token broker that keeps the one standing credential out of reach.
//
// The Broker holds the parent token (unexported, no getter, redacted from
// Config's String and LogValue) and uses it only to list permission groups
// and to create, list, verify and delete account tokens. Every registrar or
// workers call runs in a Session: a token minted for that one operation with
// exactly its Purpose's permission groups, the account as its only resource,
// expires_on TokenTTL ahead and optionally condition.request_ip, used
// through a client built for that token alone and deleted by Close.
//
// Retries are explicit. cloudflare-go's own retries are off for every
// client. Reads (GETs and the read-only domain-check) retry 429, 5xx and
// transport failures with backoff. Token creation and Worker uploads retry
// only a 429, which proves the request was refused before acting; a
// registration is sent exactly once. A mutating request whose outcome is
// unknown returns an error wrapping ErrInDoubt, to be reconciled with
// GetRegistration or GetWorker.
//
// Prices cross the package boundary as Cloudflare's exact decimal strings.
// No token value ever appears in a log line, an error or a RequestRecord.
package cloudflare
