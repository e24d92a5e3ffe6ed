package cloudflare

import (
	"fmt"
	"slices"
	"strings"
)

// Purpose is what a Session is for. It decides the exact permission groups
// of the token minted for it and which Session methods it may call.
type Purpose string

// The purposes tollgate mints tokens for.
const (
	PurposeQuote    Purpose = "quote"    // domain-check only (registrar read)
	PurposeRegister Purpose = "register" // domain-check + registrations create/read + registration-status
	PurposeDeploy   Purpose = "deploy"   // workers scripts write/read + workers.dev subdomain
	PurposeInspect  Purpose = "inspect"  // read-only registrations + scripts, for crash reconciliation
)

// Real Cloudflare permission-group names, looked up by name on the
// permission-groups endpoint.
const (
	groupTokensRead     = "Account API Tokens Read"
	groupTokensWrite    = "Account API Tokens Write"
	groupRegistrarRead  = "Registrar Domains Read"
	groupRegistrarAdmin = "Registrar Domains Admin"
	groupWorkersRead    = "Workers Scripts Read"
	groupWorkersWrite   = "Workers Scripts Write"
)

// purposeGroups is the least privilege per purpose. Register and Deploy list
// the read group next to the write one so reading back what was written
// never depends on whether the write group implies read.
var purposeGroups = map[Purpose][]string{
	PurposeQuote:    {groupRegistrarRead},
	PurposeRegister: {groupRegistrarRead, groupRegistrarAdmin},
	PurposeDeploy:   {groupWorkersRead, groupWorkersWrite},
	PurposeInspect:  {groupRegistrarRead, groupWorkersRead},
}

// Purposes lists every valid purpose.
func Purposes() []Purpose {
	return []Purpose{PurposeQuote, PurposeRegister, PurposeDeploy, PurposeInspect}
}

// Valid reports whether p is one of the defined purposes.
func (p Purpose) Valid() bool {
	_, ok := purposeGroups[p]
	return ok
}

// PermissionGroups returns the names of the permission groups a token minted
// for p holds (nil for an unknown purpose), e.g. for the audit trail.
func (p Purpose) PermissionGroups() []string {
	return slices.Clone(purposeGroups[p])
}

// operations and the purposes allowed to run them; checked locally before
// any request, so a wrong-purpose call never reaches Cloudflare.
var operationPurposes = map[string][]Purpose{
	"check domains":    {PurposeQuote, PurposeRegister},
	"register":         {PurposeRegister},
	"get registration": {PurposeRegister, PurposeInspect},
	"workflow status":  {PurposeRegister, PurposeInspect},
	"deploy worker":    {PurposeDeploy},
	"get worker":       {PurposeDeploy, PurposeInspect},
}

func checkPurpose(op string, p Purpose) error {
	allowed := operationPurposes[op]
	if slices.Contains(allowed, p) {
		return nil
	}
	names := make([]string, len(allowed))
	for i, a := range allowed {
		names[i] = string(a)
	}
	return fmt.Errorf("%s: %w: this session's purpose is %q, the operation needs %s", op, ErrWrongPurpose, p, strings.Join(names, " or "))
}
