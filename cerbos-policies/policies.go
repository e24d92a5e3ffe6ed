// Package policies embeds tollgate's default Cerbos policies and schemas, so
// the binary runs on its defaults from any directory. The folder itself is
// what a platform team edits and points tollgate at with --policies; Cerbos
// ignores this file.
package policies

import "embed"

// FS holds the default policy set: schemas, derived roles, constants and
// resource policies (not the test suites).
//
//go:embed _schemas derived_roles export_constants resource_policies
var FS embed.FS
