package server

import (
	"context"
	"slices"

	mcpserver "github.com/mark3labs/mcp-go/server"

	"github.com/tollgatehq/tollgate/authz"
	"github.com/tollgatehq/tollgate/ledger"
)

// Principal is who is calling: an agent from config (stdio) or from its
// bearer token (HTTP), plus the MCP client it uses. Client facts travel for
// audit only, never for trust.
type Principal struct {
	Name       string
	Team       string
	Owner      string
	Roles      []string
	Attributes map[string]string
	Transport  string
}

type principalKey struct{}

// WithPrincipal attaches the calling agent to ctx.
func WithPrincipal(ctx context.Context, p Principal) context.Context {
	return context.WithValue(ctx, principalKey{}, p)
}

func principalFrom(ctx context.Context) (Principal, bool) {
	p, ok := ctx.Value(principalKey{}).(Principal)
	return p, ok && p.Name != ""
}

func principalFromConfig(a AgentConfig, transport string) Principal {
	return Principal{Name: a.Name, Team: a.Team, Owner: a.Owner, Roles: a.Roles, Attributes: a.Attributes, Transport: transport}
}

func principalFromAgent(a ledger.Agent, transport string) Principal {
	return Principal{Name: a.Name, Team: a.Team, Owner: a.Owner, Roles: a.Roles, Attributes: a.Attributes, Transport: transport}
}

// clientInfo is the MCP client behind ctx's session.
func clientInfo(ctx context.Context, transport string) ledger.ClientInfo {
	ci := ledger.ClientInfo{Transport: transport}
	sess := mcpserver.ClientSessionFromContext(ctx)
	if sess == nil {
		return ci
	}
	ci.SessionID = sess.SessionID()
	if s, ok := sess.(mcpserver.SessionWithClientInfo); ok {
		impl := s.GetClientInfo()
		ci.Name, ci.Version = impl.Name, impl.Version
	}
	return ci
}

// authzPrincipal is the Cerbos principal: roles and attributes from config or
// the agent's credential; client name, version and session for audit; and
// sandbox=true when the server runs on its built-in Cloudflare sandbox. It is
// the one place a principal is built, so every check (a tool's own, the
// read-only views' AuthorizeAll, the load comparison) sends the same one.
func (p Principal) authzPrincipal(ci ledger.ClientInfo, sandbox bool) authz.Principal {
	attr := map[string]any{}
	for k, v := range p.Attributes {
		attr[k] = v
	}
	// Identity comes from the agent record, never from free-form attributes.
	attr["team"], attr["transport"] = p.Team, p.Transport
	delete(attr, "owner")
	if p.Owner != "" {
		attr["owner"] = p.Owner
	}
	if ci.Name != "" {
		attr["client_name"] = ci.Name
	}
	if ci.Version != "" {
		attr["client_version"] = ci.Version
	}
	if ci.SessionID != "" {
		attr["session_id"] = ci.SessionID
	}
	if sandbox {
		attr["sandbox"] = true
	}
	return authz.Principal{ID: p.Name, Roles: slices.Clone(p.Roles), Attr: attr}
}

func (p Principal) actor() string { return "agent:" + p.Name }

// PolicyPrincipal is the Cerbos principal tollgate sends for agent a calling
// over transport from the MCP client ci, on the built-in sandbox or not:
// what `tollgate load --compare-pdp` sends straight to the PDP beside
// tollgate.
func PolicyPrincipal(a AgentConfig, transport string, ci ledger.ClientInfo, sandbox bool) authz.Principal {
	return principalFromConfig(a, transport).authzPrincipal(ci, sandbox)
}
