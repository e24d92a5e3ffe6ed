package server

import (
	"context"

	"github.com/tollgatehq/tollgate/cloudflare"
	"github.com/tollgatehq/tollgate/tools"
)

// lookup is the pipeline as a tools.Lookup: read-only questions to
// Cloudflare under the shared inspect token, each request audited by the
// broker's observer like any other.
func (p *Pipeline) lookup(context.Context) tools.Lookup { return p }

// ZoneFor implements tools.Lookup.
func (p *Pipeline) ZoneFor(ctx context.Context, hostname string) (cloudflare.Zone, error) {
	var z cloudflare.Zone
	err := p.inspectSession.Use(ctx, func(s *cloudflare.Session) error {
		got, err := s.ZoneFor(ctx, hostname)
		if err == nil {
			z = *got
		}
		return err
	})
	return z, err
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
