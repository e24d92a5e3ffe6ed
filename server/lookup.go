package server

import (
	"context"

	"github.com/tollgatehq/tollgate/cloudflare"
	"github.com/tollgatehq/tollgate/tools"
)

// lookups is the pipeline as a tools.Lookup: read-only questions to
// Cloudflare under the shared inspect token, each request audited by the
// broker's observer like any other.
type lookups struct{ p *Pipeline }

var _ tools.Lookup = lookups{}

func (p *Pipeline) lookup(context.Context) tools.Lookup { return lookups{p} }

// ZoneFor implements tools.Lookup.
func (l lookups) ZoneFor(ctx context.Context, hostname string) (cloudflare.Zone, error) {
	var z cloudflare.Zone
	err := l.p.inspectSession.Use(ctx, func(s *cloudflare.Session) error {
		got, err := s.ZoneFor(ctx, hostname)
		if err == nil {
			z = *got
		}
		return err
	})
	return z, err
}

// CustomDomains implements tools.Lookup.
func (l lookups) CustomDomains(ctx context.Context, f cloudflare.DomainFilter) ([]cloudflare.CustomDomain, error) {
	var out []cloudflare.CustomDomain
	err := l.p.inspectSession.Use(ctx, func(s *cloudflare.Session) error {
		var err error
		out, err = s.ListDomains(ctx, f)
		return err
	})
	return out, err
}
