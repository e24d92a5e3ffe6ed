// Package sandbox emulates the Cloudflare API endpoints tollgate uses, so the
// real cloudflare-go client can run against it with nothing billed. It
// speaks the v4 envelope ({"success","errors","messages","result",
// "result_info"}), Cloudflare's status codes and error shapes, and enforces
// account tokens' permission groups, resources (the account, single zones,
// all zones), expiry, not-before and request-IP conditions, so least
// privilege can be proven against it. Every successful answer carries every
// field cloudflare-go v6.10.0 marks required in its type for that answer
// (tested by decoding each with cloudflare-go).
//
// Run it in-process (it is an http.Handler serving under /client/v4/) or
// with Serve on a loopback address; `tollgate sandbox --listen ADDR --state
// FILE` prints the account id and the parent token.
//
// # Account
//
//   - Account id: 7011a7e5a4db0c5ec0ffee0000000001 (fixed).
//   - Parent token: 40 characters, generated on first start and kept in the
//     state file; it holds only "Account API Tokens Read" and "Account API
//     Tokens Write", so it can mint tokens but cannot register or deploy.
//     Rolling its value (PUT tokens/{id}/value) changes what ParentToken
//     returns, in every sandbox sharing the state file. It cannot delete
//     itself (400).
//   - workers.dev subdomain: tollgate-sandbox (a Worker's URL is
//     https://<script>.tollgate-sandbox.workers.dev).
//
// # Endpoints and the permission groups they need
//
// Paths are under /client/v4/accounts/{account_id}/ unless they start with
// /zones. A token needs one of the listed groups on the account resource (and
// no deny policy for it); "+ zone:" adds a group the token needs on the zone
// concerned (the hostname's zone for an attach, the custom domain's zone for a
// detach, the zone itself for /zones).
//
//	POST   registrar/domain-check                   Registrar Domains Read | Admin
//	POST   registrar/registrations                  Registrar Domains Admin
//	GET    registrar/registrations                  Registrar Domains Read | Admin
//	GET    registrar/registrations/{domain}         Registrar Domains Read | Admin
//	GET    registrar/registrations/{domain}/registration-status
//	                                                Registrar Domains Read | Admin
//	GET    /zones                                   any token; lists the zones it has Zone Read on
//	GET    /zones/{zone_id}                         + zone: Zone Read
//	PUT    workers/scripts/{name}                   Workers Scripts Write
//	GET    workers/scripts                          Workers Scripts Read | Write
//	GET    workers/scripts/{name}                   Workers Scripts Read | Write
//	DELETE workers/scripts/{name}                   Workers Scripts Write
//	GET    workers/subdomain                        Workers Scripts Read | Write
//	POST   workers/scripts/{name}/subdomain         Workers Scripts Write
//	GET    workers/scripts/{name}/subdomain         Workers Scripts Read | Write
//	POST   workers/scripts/{name}/versions          Workers Scripts Write
//	GET    workers/scripts/{name}/versions          Workers Scripts Read | Write
//	GET    workers/scripts/{name}/versions/{id}     Workers Scripts Read | Write
//	POST   workers/scripts/{name}/deployments       Workers Scripts Write
//	GET    workers/scripts/{name}/deployments       Workers Scripts Read | Write
//	GET    workers/scripts/{name}/deployments/{id}  Workers Scripts Read | Write
//	DELETE workers/scripts/{name}/deployments/{id}  Workers Scripts Write
//	PUT    workers/domains                          Workers Scripts Write + zone: Workers Routes Write
//	GET    workers/domains                          Workers Scripts Read | Write
//	GET    workers/domains/{id}                     Workers Scripts Read | Write
//	DELETE workers/domains/{id}                     Workers Scripts Write + zone: Workers Routes Write
//	POST   tokens                                   Account API Tokens Write
//	GET    tokens                                   Account API Tokens Read | Write
//	GET    tokens/{id}                              Account API Tokens Read | Write
//	DELETE tokens/{id}                              Account API Tokens Write
//	PUT    tokens/{id}/value                        Account API Tokens Write
//	GET    tokens/permission_groups                 Account API Tokens Read | Write
//	GET    tokens/verify                            any valid token of the account
//
// Cloudflare's API reference lists only Workers Scripts Write for attaching
// and detaching a custom domain. A custom domain is a route on the zone
// (Cloudflare creates its DNS record and certificate there), and the
// sandbox also asks for the zone's Workers Routes Write, so that a token
// minted for one zone is refused on another; tollgate's tokens hold both, so
// they work against Cloudflare either way.
//
// Permission groups carry Cloudflare's real names; their ids are the
// sandbox's own, stable across restarts: the first 32 hex digits of
// SHA-256("tollgate-sandbox/permission-group/" + name). Account scope:
// Account API Tokens Read/Write, Registrar Domains Read/Admin, Workers
// Scripts Read/Write, and the unused Account Settings Read, Billing Read,
// Workers KV Storage Write. Zone scope: Zone Read, Workers Routes Read/Write,
// and the unused DNS Read/Write. Name lookups must choose.
//
// # Token resources
//
// A policy's resources name the account
// ({"com.cloudflare.api.account.<account_id>": "*"}), single zones
// ({"com.cloudflare.api.account.zone.<zone_id>": "*"}), or zones nested under
// the account ({"com.cloudflare.api.account.<account_id>":
// {"com.cloudflare.api.account.zone.*": "*"}} for all of them, or
// "com.cloudflare.api.account.zone.<zone_id>" keys for some). Account groups
// count on the account alone and zone groups on zones alone: a policy with
// account groups must name the account, one with zone groups must name
// zones, and a named zone must be one of the account's (400 otherwise).
//
// # Authentication answers
//
//	missing / not "Bearer <40 chars>"      400  6003 "Invalid request headers" (error_chain 6111)
//	unknown, deleted, expired, not-before   401  10000 "Authentication error"
//	  (same, on tokens/verify)              401  1000 "Invalid API Token"
//	path names another account              403  9109 "Unauthorized to access requested resource"
//	request IP outside condition.request_ip 403  9109 "Cannot use the access token from location: <ip>"
//	token lacks the endpoint's group        403  10000 "Authentication error"
//
// Every response, errors included, carries a cf-ray header
// ("<16 hex>-SBX", deterministic for a given Seed).
//
// # Registrar data (USD, per year)
//
//	extension  registration  renewal
//	com        10.44         10.44
//	net        11.84         11.84
//	org        10.11         10.11
//	dev        12.18         12.18
//	app        14.18         14.18
//	io         50.00         50.00
//	xyz         2.00         13.18
//	co.uk       4.52          4.52
//	info        4.68         21.18
//
// SetPrice overrides or adds an extension. A multi-year registration costs
// the first year at registration price and each further year at renewal
// price (xyz for 3 years: 2.00 + 2 × 13.18 = 28.36).
//
// domain-check reasons, spelled as Cloudflare spells them:
//
//	domain_unavailable               google.com, example.com, example.net, example.org,
//	                                 cloudflare.com, taken.dev, taken.app, and every
//	                                 name registered in the sandbox (pending included)
//	domain_premium (tier premium)    premium.com, crypto.xyz, vip.io, shop.app
//	extension_not_supported_via_api  ai, sh, me
//	extension_disallows_registration tk
//	extension_not_supported          any other extension (e.g. museum, com.au)
//
// Pricing is present only when registrable. Malformed names (bad labels, a
// bare extension, a name below a registrable domain such as www.x.com) are
// omitted from the answer, as Cloudflare documents. At most 20 names per
// request.
//
// # Registration workflows
//
// POST registrar/registrations answers 201 with a succeeded workflow, except:
//
//	label prefix  answer  on successive registration-status polls
//	slow-         202     in_progress, then succeeded on the 2nd poll
//	blocked-      202     blocked, then succeeded on the 2nd poll
//	action-       202     action_required, forever
//	fail-         202     in_progress, then failed (error.code registry_rejected)
//	Prefer: respond-async on any other name: 202 pending, succeeded on the 1st poll
//
// links.self is this domain's registration-status URL. A succeeded workflow's
// context holds "registration" (the resource) and "charge" {"amount",
// "currency"}; the charge field is the sandbox's own (Cloudflare documents
// none). A name is taken from the moment its registration is accepted; a
// failed workflow frees it. The account may own at most 100 domains.
//
// # Zones
//
// A registration that succeeds creates the domain's zone (status active,
// type full, the Free plan, name servers ada/bob.ns.cloudflare.com). Its id
// is the first 32 hex digits of SHA-256("tollgate-sandbox/zone/" + name).
// AddZone adds a zone without a registration (a domain brought from
// elsewhere). GET /zones takes name (exact, or contains:, starts_with:,
// ends_with:), status, account.id, account.name, direction, page and
// per_page (5 to 50).
//
// # Workers custom domains
//
// PUT workers/domains {hostname, service, environment?, zone_id?, zone_name?}
// attaches a Worker to the zone apex or a subdomain on one of the account's
// zones (the longest zone name that is the hostname or a parent of it). The
// Worker must exist; environment may only be production. Attaching a
// hostname that is already attached moves it to the new Worker and keeps its
// id and cert_id. GET takes hostname, service, zone_id, zone_name and
// environment filters. Deleting a Worker detaches its domains.
//
// # Versions and deployments
//
// Every script upload (PUT workers/scripts/{name}) makes a new version and
// a deployment of it at 100 %. POST .../versions uploads a version (a module
// Worker; metadata.annotations workers/tag and workers/message are kept and
// answered under "annotations") without serving it. POST .../deployments
// {strategy: "percentage", versions: [{version_id, percentage}], annotations:
// {"workers/message"}} splits the traffic across one or two distinct versions
// of the script, 0 to 100 % each, 100 % in all, and is in force at once. The
// script's content, etag and entry point are those of the version with the
// larger share (the newer on a tie). The newest deployment cannot be
// deleted. A script keeps its last 20 versions (never dropping one the
// deployment in force uses) and 20 deployments. Lists are newest first.
//
// # Workers
//
// Uploads are multipart/form-data with a JSON "metadata" part naming
// main_module (an uploaded part, application/javascript+module) or body_part.
// compatibility_date must be YYYY-MM-DD and not in the future. All parts
// together may not exceed 3 MiB. GET workers/scripts/{name} returns the
// modules as multipart/form-data with a cf-entrypoint header naming the main
// module. The etag is derived from the content: the same upload keeps it.
//
// # Error codes
//
// Real Cloudflare codes: 971 (429 rate limited), 1000, 6003/6111, 6007
// (malformed JSON), 7000 (no route), 9109, 10000, 10007 (Worker not found),
// 10013 (500 unknown error), 10021 (upload rejected), 10027 (upload too
// large), 7003 (no such zone). The sandbox's own, where the API reference
// publishes none: 1001 (invalid token body), 1003 (token not found), 1101
// (invalid zones query), 10016 (invalid Worker name), 10222 (no such
// version), 10223 (invalid deployment), 10224 (no such deployment), 10400
// (invalid registrar request), 10403 (domain limit), 10404 (no such
// registration), 10409 (domain_unavailable on registration, HTTP 409), 10422
// (premium or unsupported extension on registration, HTTP 400), 100100
// (invalid custom-domain request), 100101 (hostname not on a zone of the
// account), 100102 (no such custom domain).
//
// # Faults
//
// Faults add latency, answer a fraction of requests 500 (code 10013) or 429
// (code 971, Retry-After: 1), or hang until the client gives up, limited to
// paths containing PathContains and to requests of Method (both optional).
// FailAfterEffect makes the 500s, and the hang, happen after the change was
// made and persisted: the client sees an error, or nothing, for a request
// that took effect. Hanging reports how many requests a hang holds; Close
// releases them with a 503 (changing the faults does not). Randomness comes
// from Seed.
//
// # Rate limit
//
// Like Cloudflare, the sandbox limits the account to Options.RateLimit
// (default 1,200 requests per 5 minutes, all tokens together; counted per
// sandbox process). Every authenticated answer carries
// `Ratelimit: "default";r=<left>;t=<seconds to reset>` and
// `Ratelimit-Policy: "default";q=<limit>;w=<window seconds>`. The request
// that exceeds the limit, and every request for Lockout (default 5 minutes)
// after it, from any token, is answered 429 (code 971) with Retry-After: the
// block that stops the platform team's own calls on the real API. Lockouts
// counts them; SetRateLimit changes the numbers, or turns the emulation off.
//
// # Fault admin endpoint
//
// With Options.Admin (always on in `tollgate sandbox`), a process that does
// not share memory with the sandbox can change its faults at run time, e.g.
// a crash test that hangs one call, kills its client and clears the fault
// before a restart. It answers loopback clients only (403 otherwise), sits
// outside the API prefix, and is neither logged as an API request nor
// subject to faults:
//
//	GET  /__sandbox/faults   {"faults":{...},"hanging":N}
//	POST /__sandbox/faults   replace the faults with the body; {} clears them
//
// The body (and the "faults" object) has the fields latency (Go duration,
// 0 to 10m), error_rate and rate_limit_rate (0..1, sum at most 1), hang,
// path_contains, method and fail_after_effect; unknown fields are a 400
// naming them. For example, to hang the token DELETE that follows a call:
//
//	curl -s -X POST http://127.0.0.1:8788/__sandbox/faults \
//	  -d '{"hang":true,"method":"DELETE","path_contains":"/tokens/"}'
//
// `tollgate sandbox` also takes the initial faults as flags (--hang-path,
// --hang-method, --error-rate, --fail-after-effect, …; see --help).
//
// # State
//
// With a StateFile, everything (tokens by SHA-256 of their value, except the
// parent token which is kept so it can be printed again; registrations and
// workflows; zones; scripts with their versions, modules and deployments;
// custom domains; price overrides) is kept in a JSON snapshot, mode 0600,
// loaded on start. Any number of sandboxes, in one process or in several
// (every tollgate process on one database), may share the file:
//
//   - each request first re-reads the file if another sandbox wrote it
//     since (one stat per request when nothing changed);
//   - each change is a read-modify-write under an exclusive flock on
//     "<file>.lock": re-read, apply, write a temp file, fsync, rename, fsync
//     the directory. Registrations and their charges, workflow progress,
//     zones, uploads, versions, deployments, custom domains, prices and a
//     rolled token value are durable before their answer is sent;
//   - minting and deleting tokens only changes memory and is written with
//     the next durable change, or after Options.FlushInterval (default
//     200 ms; at once when 256 are waiting; Flush and Close write them too),
//     as one write. Until written they are replayed onto whatever another
//     sandbox wrote, so they are never overwritten. A crash forgets them: a
//     forgotten mint is a token that never existed, a forgotten delete a
//     leftover that tollgate's start-up sweep deletes.
//
// A version-1 snapshot (scripts without versions) is upgraded on load. The
// request log is in memory only (the last 45,000 to 50,000 requests).
package sandbox
