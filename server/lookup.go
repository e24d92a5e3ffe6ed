package server

import (
	"context"
	"sync"

	"github.com/tollgatehq/tollgate/cloudflare"
	"github.com/tollgatehq/tollgate/tools"
)

// lookup is the pipeline as a tools.Lookup: read-only questions to
// Cloudflare under the shared inspect token, each request audited by the
// broker's observer like any other.
func (p *Pipeline) lookup(context.Context) tools.Lookup { return p }

// ZoneFor implements tools.Lookup. Within one call's run (withZoneMemo)
// a hostname's zone is asked of Cloudflare once: the zone the plan found,
// and the policy and the approver saw, is the zone the execution's token is
// scoped to, and the execution acts on the token's zone alone.
func (p *Pipeline) ZoneFor(ctx context.Context, hostname string) (cloudflare.Zone, error) {
	memo, _ := ctx.Value(zoneMemoKey{}).(*zoneMemo)
	if z, ok := memo.get(hostname); ok {
		return z, nil
	}
	var z cloudflare.Zone
	err := p.inspectSession.Use(ctx, func(s *cloudflare.Session) error {
		got, err := s.ZoneFor(ctx, hostname)
		if err == nil {
			z = *got
		}
		return err
	})
	if err == nil {
		memo.put(hostname, z)
	}
	return z, err
}

// zoneMemo keeps the zones one call's run found (never a failed lookup).
// It lives as long as the run's context: from planning to an execution that
// follows without a human. An execution a human approved later, or one
// resumed after a restart, asks Cloudflare again.
type zoneMemo struct {
	mu    sync.Mutex
	zones map[string]cloudflare.Zone
}

type zoneMemoKey struct{}

// withZoneMemo gives ctx a memo of the zones looked up under it.
func withZoneMemo(ctx context.Context) context.Context {
	return context.WithValue(ctx, zoneMemoKey{}, &zoneMemo{zones: map[string]cloudflare.Zone{}})
}

func (m *zoneMemo) get(hostname string) (cloudflare.Zone, bool) {
	if m == nil {
		return cloudflare.Zone{}, false
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	z, ok := m.zones[hostname]
	return z, ok
}

func (m *zoneMemo) put(hostname string, z cloudflare.Zone) {
	if m == nil {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.zones[hostname] = z
}

// CustomDomains implements tools.Lookup.
func (p *Pipeline) CustomDomains(ctx context.Context, f cloudflare.DomainFilter) ([]cloudflare.CustomDomain, error) {
	var out []cloudflare.CustomDomain
	err := p.inspectSession.Use(ctx, func(s *cloudflare.Session) error {
		var err error
		out, err = s.ListDomains(ctx, f)
		return err
	})
	return out, err
}

// TeamSucceeded implements tools.PlanEnv for the caller of ctx.
func (p *Pipeline) TeamSucceeded(ctx context.Context, tool, resource string) (bool, error) {
	pr, _, err := p.caller(ctx)
	if err != nil {
		return false, err
	}
	return planEnv{p, pr.Team}.TeamSucceeded(ctx, tool, resource)
}

// planEnv is the pipeline as the PlanEnv of one caller's team.
type planEnv struct {
	*Pipeline
	team string
}

// TeamSucceeded implements tools.PlanEnv: the ledger's succeeded
// operations of tool on resource, by the team.
func (e planEnv) TeamSucceeded(ctx context.Context, tool, resource string) (bool, error) {
	if e.team == "" {
		return false, nil
	}
	ops, err := e.db.Succeeded(ctx, tool, resource, 50)
	if err != nil {
		return false, err
	}
	for _, op := range ops {
		if op.Team == e.team {
			return true, nil
		}
	}
	return false, nil
}

// Zones implements tools.Lookup.
func (p *Pipeline) Zones(ctx context.Context) ([]cloudflare.Zone, error) {
	var out []cloudflare.Zone
	err := p.inspectSession.Use(ctx, func(s *cloudflare.Session) error {
		var err error
		out, err = s.ListZones(ctx)
		return err
	})
	return out, err
}

// Workers implements tools.Lookup.
func (p *Pipeline) Workers(ctx context.Context) ([]cloudflare.WorkerSummary, error) {
	var out []cloudflare.WorkerSummary
	err := p.inspectSession.Use(ctx, func(s *cloudflare.Session) error {
		var err error
		out, err = s.ListWorkers(ctx)
		return err
	})
	return out, err
}

// Zones implements tools.Lookup: a lookup needs Cloudflare.
func (cachedQuotes) Zones(context.Context) ([]cloudflare.Zone, error) { return nil, errQuoteNeeded }

// Workers implements tools.Lookup: a lookup needs Cloudflare.
func (cachedQuotes) Workers(context.Context) ([]cloudflare.WorkerSummary, error) {
	return nil, errQuoteNeeded
}
