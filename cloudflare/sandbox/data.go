package sandbox

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strconv"
	"strings"
)

// accountID is the one account the sandbox serves. It is fixed so a state
// file, a printed quickstart and a test can all name it.
const accountID = "7011a7e5a4db0c5ec0ffee0000000001"

// accountName is the account's display name.
const accountName = "tollgate sandbox"

// authorEmail is who the sandbox says uploaded and deployed Worker versions.
const authorEmail = "sandbox@tollgate.invalid"

// freePlanID is the id the sandbox gives the Free plan every zone is on.
const freePlanID = "0feeeeeeeeeeeeeeeeeeeeeeeeeeeeee"

// workersSubdomain is the account's workers.dev subdomain.
const workersSubdomain = "tollgate-sandbox"

// Scopes of permission groups, as Cloudflare names them.
const (
	scopeAccount = "com.cloudflare.api.account"
	scopeZone    = "com.cloudflare.api.account.zone"
)

// Policy resources an account-owned token may name: the account, one of its
// zones (zoneResourcePrefix + zone id), or, nested under the account, all of
// its zones (allZonesResource).
var accountResource = scopeAccount + "." + accountID

const (
	zoneResourcePrefix = scopeZone + "."
	allZonesResource   = scopeZone + ".*"
)

// Real Cloudflare permission-group names used by the endpoints the sandbox
// serves (see doc.go for the table of which endpoint needs which).
const (
	pgTokensRead     = "Account API Tokens Read"
	pgTokensWrite    = "Account API Tokens Write"
	pgRegistrarRead  = "Registrar Domains Read"
	pgRegistrarAdmin = "Registrar Domains Admin"
	pgWorkersRead    = "Workers Scripts Read"
	pgWorkersWrite   = "Workers Scripts Write"
	// Zone-scoped groups: granted on zones, not on the account.
	pgZoneRead    = "Zone Read"
	pgRoutesRead  = "Workers Routes Read"
	pgRoutesWrite = "Workers Routes Write"
)

// permissionGroup is one entry of the permission-groups endpoint.
type permissionGroup struct {
	ID     string   `json:"id"`
	Name   string   `json:"name"`
	Scopes []string `json:"scopes"`
}

// permissionGroups is the catalogue the sandbox publishes. Besides the groups
// its endpoints use it lists a few unrelated ones, so a client that looks
// groups up by name has to actually pick the right ones.
var permissionGroups = func() []permissionGroup {
	defs := []struct{ name, scope string }{
		{pgTokensRead, scopeAccount},
		{pgTokensWrite, scopeAccount},
		{pgRegistrarRead, scopeAccount},
		{pgRegistrarAdmin, scopeAccount},
		{pgWorkersRead, scopeAccount},
		{pgWorkersWrite, scopeAccount},
		{pgZoneRead, scopeZone},
		{pgRoutesRead, scopeZone},
		{pgRoutesWrite, scopeZone},
		{"Account Settings Read", scopeAccount},
		{"Billing Read", scopeAccount},
		{"Workers KV Storage Write", scopeAccount},
		{"DNS Read", scopeZone},
		{"DNS Write", scopeZone},
	}
	out := make([]permissionGroup, 0, len(defs))
	for _, d := range defs {
		out = append(out, permissionGroup{ID: permissionGroupID(d.name), Name: d.name, Scopes: []string{d.scope}})
	}
	return out
}()

// permissionGroupID derives a stable id from a group's name, so ids survive
// restarts and can be documented without being Cloudflare's real ids.
func permissionGroupID(name string) string {
	sum := sha256.Sum256([]byte("tollgate-sandbox/permission-group/" + name))
	return hex.EncodeToString(sum[:16])
}

func permissionGroupByID(id string) (permissionGroup, bool) {
	for _, g := range permissionGroups {
		if g.ID == id {
			return g, true
		}
	}
	return permissionGroup{}, false
}

// zoneID is the id of the zone named name: derived from the name, so a
// test or a printed example can know it, and stable across restarts.
func zoneID(name string) string {
	sum := sha256.Sum256([]byte("tollgate-sandbox/zone/" + name))
	return hex.EncodeToString(sum[:16])
}

// nameServers are the two Cloudflare name servers every sandbox zone is given.
var nameServers = []string{"ada.ns.cloudflare.com", "bob.ns.cloudflare.com"}

// uuidFrom derives a UUID-shaped id from parts (version 4 layout), for ids
// Cloudflare documents as UUIDs that the sandbox derives deterministically.
func uuidFrom(parts ...[]byte) string {
	return uuidString(sha256Parts(parts...))
}

// newUUID returns a random UUID (version 4).
func newUUID() (string, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("random id: %w", err)
	}
	return uuidString(b[:]), nil
}

func sha256Parts(parts ...[]byte) []byte {
	h := sha256.New()
	for _, p := range parts {
		h.Write(p)
		h.Write([]byte{0})
	}
	return h.Sum(nil)[:16]
}

func uuidString(b []byte) string {
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	x := hex.EncodeToString(b[:16])
	return x[0:8] + "-" + x[8:12] + "-" + x[12:16] + "-" + x[16:20] + "-" + x[20:32]
}

// priceRow is the registrar's yearly price for an extension, as the exact
// decimal strings Cloudflare returns.
type priceRow struct {
	Registration string `json:"registration"`
	Renewal      string `json:"renewal"`
}

// defaultPrices is the price table per extension supported for API
// registration, in USD. The figures are the sandbox's own, chosen to look
// like at-cost registry prices; xyz and info show a first year cheaper than
// renewal.
var defaultPrices = map[string]priceRow{
	"com":   {"10.44", "10.44"},
	"net":   {"11.84", "11.84"},
	"org":   {"10.11", "10.11"},
	"dev":   {"12.18", "12.18"},
	"app":   {"14.18", "14.18"},
	"io":    {"50.00", "50.00"},
	"xyz":   {"2.00", "13.18"},
	"co.uk": {"4.52", "4.52"},
	"info":  {"4.68", "21.18"},
}

// currency is the only currency the sandbox bills in.
const currency = "USD"

// notViaAPI are extensions Cloudflare sells in the dashboard only.
var notViaAPI = map[string]bool{"ai": true, "sh": true, "me": true}

// disallowed are extensions whose registry has frozen new registrations.
var disallowed = map[string]bool{"tk": true}

// takenNames are registered elsewhere: domain-check says domain_unavailable.
var takenNames = map[string]bool{
	"google.com":     true,
	"example.com":    true,
	"example.net":    true,
	"example.org":    true,
	"cloudflare.com": true,
	"taken.dev":      true,
	"taken.app":      true,
}

// premiumNames are premium-priced: not registrable through the API.
var premiumNames = map[string]bool{
	"premium.com": true,
	"crypto.xyz":  true,
	"vip.io":      true,
	"shop.app":    true,
}

// Workflow-driving label prefixes: a registration of such a name answers 202
// and moves through these states as registration-status is polled.
const (
	prefixSlow    = "slow-"    // 202 in_progress, succeeded on the 2nd poll
	prefixBlocked = "blocked-" // 202 blocked, succeeded on the 2nd poll
	prefixAction  = "action-"  // 202 action_required, never resolves
	prefixFail    = "fail-"    // 202 in_progress, failed on the 2nd poll
)

// Reasons a domain is not registrable, exactly as Cloudflare spells them.
const (
	reasonNotViaAPI  = "extension_not_supported_via_api"
	reasonNotSupport = "extension_not_supported"
	reasonDisallows  = "extension_disallows_registration"
	reasonPremium    = "domain_premium"
	reasonTaken      = "domain_unavailable"
)

// maxScriptBytes is the Workers upload limit the sandbox enforces (the free
// plan's 3 MiB, measured uncompressed).
const maxScriptBytes = 3 << 20

// maxBodyBytes bounds any request body the sandbox reads.
const maxBodyBytes = 16 << 20

// maxDomainsPerAccount is Cloudflare's documented per-account domain limit.
const maxDomainsPerAccount = 100

// parseCents parses a price such as "10.44" into cents. The sandbox only
// deals in two-decimal prices, so integer cents are exact.
func parseCents(s string) (int64, error) {
	whole, frac, ok := strings.Cut(s, ".")
	if !ok || len(frac) != 2 || whole == "" || len(whole) > 12 {
		return 0, fmt.Errorf("price %q: want a decimal with exactly two fraction digits, like 10.44", s)
	}
	for _, r := range whole + frac {
		if r < '0' || r > '9' {
			return 0, fmt.Errorf("price %q: want only digits and one dot, like 10.44", s)
		}
	}
	w, err := strconv.ParseInt(whole, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("price %q: %w", s, err)
	}
	f, _ := strconv.ParseInt(frac, 10, 64)
	return w*100 + f, nil
}

func formatCents(c int64) string {
	return fmt.Sprintf("%d.%02d", c/100, c%100)
}
