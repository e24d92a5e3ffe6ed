package cloudflare

import (
	"fmt"
	"regexp"
	"slices"
	"strings"
)

// Real Cloudflare permission-group names, looked up by name on the
// permission-groups endpoint. Account groups are granted on the account,
// zone groups on zones.
const (
	GroupTokensRead     = "Account API Tokens Read"
	GroupTokensWrite    = "Account API Tokens Write"
	GroupRegistrarRead  = "Registrar Domains Read"
	GroupRegistrarAdmin = "Registrar Domains Admin"
	GroupWorkersRead    = "Workers Scripts Read"
	GroupWorkersWrite   = "Workers Scripts Write"
	// Zone groups.
	GroupZoneRead    = "Zone Read"
	GroupRoutesRead  = "Workers Routes Read"
	GroupRoutesWrite = "Workers Routes Write"
)

// Permissions is what a token needs, as Cloudflare permission-group names:
// Account groups on the account, Zone groups on the zones a session names.
// A tool declares its own; the built-in purposes have theirs.
type Permissions struct {
	Account []string
	Zone    []string
}

// String lists the groups with where they apply, for messages and logs.
func (p Permissions) String() string {
	var parts []string
	if len(p.Account) > 0 {
		parts = append(parts, strings.Join(p.Account, ", ")+" on the account")
	}
	if len(p.Zone) > 0 {
		parts = append(parts, strings.Join(p.Zone, ", ")+" on zones")
	}
	if len(parts) == 0 {
		return "no permissions"
	}
	return strings.Join(parts, "; ")
}

// Purpose is a built-in kind of session. It decides the permission groups of
// the token minted for it; Broker.Open takes any Permissions instead.
type Purpose string

// The purposes tollgate mints tokens for.
const (
	PurposeQuote    Purpose = "quote"    // domain-check only (registrar read)
	PurposeRegister Purpose = "register" // domain-check + registrations create/read + registration-status
	PurposeDeploy   Purpose = "deploy"   // workers scripts write/read + workers.dev subdomain
	PurposeInspect  Purpose = "inspect"  // read-only registrations, scripts, custom domains and zones: lookups and crash reconciliation
)

// purposePermissions is the least privilege per purpose. Register and Deploy
// list the read group next to the write one so reading back what was
// written never depends on whether the write group implies read.
var purposePermissions = map[Purpose]Permissions{
	PurposeQuote:    {Account: []string{GroupRegistrarRead}},
	PurposeRegister: {Account: []string{GroupRegistrarRead, GroupRegistrarAdmin}},
	PurposeDeploy:   {Account: []string{GroupWorkersRead, GroupWorkersWrite}},
	PurposeInspect:  {Account: []string{GroupRegistrarRead, GroupWorkersRead}, Zone: []string{GroupZoneRead}},
}

// Purposes lists every built-in purpose.
func Purposes() []Purpose {
	return []Purpose{PurposeQuote, PurposeRegister, PurposeDeploy, PurposeInspect}
}

// Valid reports whether p is one of the built-in purposes.
func (p Purpose) Valid() bool {
	_, ok := purposePermissions[p]
	return ok
}

// Permissions returns what a token minted for p holds (nothing for an
// unknown purpose). A purpose's zone groups are granted on all of the
// account's zones: the built-in purposes are lookups that do not know the
// zone yet.
func (p Purpose) Permissions() Permissions {
	perm := purposePermissions[p]
	return Permissions{Account: slices.Clone(perm.Account), Zone: slices.Clone(perm.Zone)}
}

// PermissionGroups returns the names of the account groups a token minted
// for p holds (nil for an unknown purpose), e.g. for the audit trail.
func (p Purpose) PermissionGroups() []string {
	return slices.Clone(purposePermissions[p].Account)
}

// nameRE is what a session's name may be: it is part of the token's name,
// where ':' separates fields, and a label in metrics.
var nameRE = regexp.MustCompile(`^[a-z][a-z0-9_-]{0,39}$`)

// SessionSpec describes the token a session is opened with.
type SessionSpec struct {
	// Name says what the token is for (a Purpose, or a tool's name). It is
	// part of the token's name and of every RequestRecord (as Purpose).
	Name string
	// Label ties the token to one operation (e.g. its id).
	Label string
	// Permissions are the groups the token holds.
	Permissions Permissions
	// Zones are the ids of the zones Permissions.Zone is granted on. Exactly
	// these zones: a token for zone A is refused on zone B.
	Zones []string
	// AllZones grants Permissions.Zone on every zone of the account instead
	// (lookups that do not know the zone yet).
	AllZones bool
}

// Validate reports every problem with the spec at once.
func (sp SessionSpec) Validate() error {
	var errs []string
	if !nameRE.MatchString(sp.Name) {
		errs = append(errs, fmt.Sprintf("name %q: want 1 to 40 lowercase letters, digits, '_' or '-', starting with a letter", sp.Name))
	}
	if !labelRE.MatchString(sp.Label) {
		errs = append(errs, fmt.Sprintf("label %q: want 1 to 64 letters, digits, '.', '_' or '-'", sp.Label))
	}
	if len(sp.Permissions.Account) == 0 && len(sp.Permissions.Zone) == 0 {
		errs = append(errs, "permissions: none; name at least one permission group")
	}
	switch {
	case len(sp.Permissions.Zone) > 0 && len(sp.Zones) == 0 && !sp.AllZones:
		errs = append(errs, "zones: zone permission groups need the zones they apply to (Zones, or AllZones)")
	case len(sp.Permissions.Zone) == 0 && (len(sp.Zones) > 0 || sp.AllZones):
		errs = append(errs, "zones: named without zone permission groups")
	case len(sp.Zones) > 0 && sp.AllZones:
		errs = append(errs, "zones: name zones or AllZones, not both")
	}
	for _, z := range sp.Zones {
		if !isAccountID(z) {
			errs = append(errs, fmt.Sprintf("zone %q: want the 32 lowercase hex digits of a zone id", z))
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("cloudflare session: %s", strings.Join(errs, "; "))
	}
	return nil
}

// need is one permission an operation requires of its session's token: one
// of groups, on the account (zone "") or on a zone (anyZone: whichever
// zones the token holds).
type need struct {
	groups []string
	zone   string
}

const anyZone = "*"

// Needs of the operations, checked locally before any request, so a call
// the token cannot make never reaches Cloudflare.
var (
	needRegistrarRead  = need{groups: []string{GroupRegistrarRead, GroupRegistrarAdmin}}
	needRegistrarAdmin = need{groups: []string{GroupRegistrarAdmin}}
	needWorkersRead    = need{groups: []string{GroupWorkersRead, GroupWorkersWrite}}
	needWorkersWrite   = need{groups: []string{GroupWorkersWrite}}
	needZoneRead       = need{groups: []string{GroupZoneRead}, zone: anyZone}
)

// needRoutesWrite is Workers Routes Write on one zone.
func needRoutesWrite(zone string) need {
	return need{groups: []string{GroupRoutesWrite}, zone: zone}
}

// grants is what a session's token holds.
type grants struct {
	account  []string
	zone     []string
	zones    []string
	allZones bool
}

func (g grants) allow(n need) bool {
	if n.zone == "" {
		return containsAny(g.account, n.groups)
	}
	if !containsAny(g.zone, n.groups) {
		return false
	}
	return g.allZones || (n.zone == anyZone && len(g.zones) > 0) || slices.Contains(g.zones, n.zone)
}

func containsAny(have, want []string) bool {
	for _, w := range want {
		if slices.Contains(have, w) {
			return true
		}
	}
	return false
}

func (n need) String() string {
	where := "on the account"
	switch n.zone {
	case "":
	case anyZone:
		where = "on a zone"
	default:
		where = "on zone " + n.zone
	}
	return strings.Join(n.groups, " or ") + " " + where
}

// checkNeeds fails with ErrWrongPurpose when the session's token lacks one of needs.
func (s *Session) checkNeeds(op string, needs ...need) error {
	for _, n := range needs {
		if !s.grants.allow(n) {
			return fmt.Errorf("%s: %w: the %q session's token holds %s; the operation needs %s", op, ErrWrongPurpose, s.Purpose, s.permissionsText(), n)
		}
	}
	return nil
}

func (s *Session) permissionsText() string {
	p := Permissions{Account: s.grants.account, Zone: s.grants.zone}.String()
	switch {
	case s.grants.allZones:
		p += " (all zones)"
	case len(s.grants.zones) > 0:
		p += " (" + strings.Join(s.grants.zones, ", ") + ")"
	}
	return p
}
