// Package authz asks a Cerbos policy decision point (PDP) whether a principal
// may perform actions on resources, and can run that PDP itself.
//
// Two halves:
//
//   - [Client] speaks the Cerbos gRPC API (CheckResources) with the generated
//     protobuf types, applying the requests' validation rules itself (see
//     buildPrincipal). It never returns an error from a
//     check: anything that prevents a clear answer (PDP unreachable, timeout,
//     malformed response, invalid request) is a deny that carries a reason,
//     so callers cannot fail open by forgetting an error branch.
//   - [Managed] starts and supervises the real `cerbos` binary on a private
//     unix socket over a policy folder (cerbos-policies/ by default), restarts
//     it when it dies, and makes sure it never outlives tollgate.
//
// Policy outputs are how policies talk back: string outputs of the rules that
// decided a deny become [Decision.Reasons]; map outputs such as
// {"require_approval": true, "approvals_required": 2} are read with
// [Decision.Approval]. cerbos-policies/README.md documents the convention.
package authz
