package server

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/tollgatehq/tollgate/cloudflare"
	"github.com/tollgatehq/tollgate/ledger"
	"github.com/tollgatehq/tollgate/tools"
)

// quoteLimiter is a token bucket per agent for registrar price checks.
type quoteLimiter struct {
	perMinute int
	mu        sync.Mutex
	buckets   map[string]*quoteBucket
}

type quoteBucket struct {
	tokens float64
	last   time.Time
}

func (l *quoteLimiter) allow(agent string, now time.Time) bool {
	if l.perMinute <= 0 {
		return true
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.buckets == nil {
		l.buckets = map[string]*quoteBucket{}
	}
	b := l.buckets[agent]
	if b == nil {
		b = &quoteBucket{tokens: float64(l.perMinute), last: now}
		l.buckets[agent] = b
	}
	b.tokens = min(float64(l.perMinute), b.tokens+now.Sub(b.last).Minutes()*float64(l.perMinute))
	b.last = now
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// maxCachedQuotes bounds the quote cache; beyond it expired quotes are
// dropped, and if that is not enough, all of them.
const maxCachedQuotes = 4096

// quoteCache keeps registrar answers for their own validity (QuoteTTL), so
// asking about the same name again within it costs no Cloudflare request.
// Concurrent askers of a name not in it wait for one request. The price is
// re-checked with the execution token right before anything is bought, so
// a cached price can never buy at a higher one.
type quoteCache struct {
	ttl time.Duration

	mu       sync.Mutex
	quotes   map[string]tools.Quote
	inFlight map[string]*quoteCall
}

type quoteCall struct {
	done chan struct{}
	q    tools.Quote
	err  error
}

func newQuoteCache(ttl time.Duration) *quoteCache {
	return &quoteCache{ttl: ttl, quotes: map[string]tools.Quote{}, inFlight: map[string]*quoteCall{}}
}

// cached is the quote for name if one is still valid at now.
func (c *quoteCache) cached(name string, now time.Time) (tools.Quote, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	q, ok := c.quotes[name]
	if !ok || !now.Before(q.ExpiresAt) {
		return tools.Quote{}, false
	}
	return q, true
}

// get returns the cached quote for name or runs fetch once for everyone
// asking at the same time. Only successful answers are kept.
func (c *quoteCache) get(ctx context.Context, name string, now time.Time, fetch func() (tools.Quote, error)) (tools.Quote, error) {
	c.mu.Lock()
	if q, ok := c.quotes[name]; ok && now.Before(q.ExpiresAt) {
		c.mu.Unlock()
		return q, nil
	}
	if call, ok := c.inFlight[name]; ok {
		c.mu.Unlock()
		select {
		case <-call.done:
			return call.q, call.err
		case <-ctx.Done():
			return tools.Quote{}, ctx.Err()
		}
	}
	call := &quoteCall{done: make(chan struct{})}
	c.inFlight[name] = call
	c.mu.Unlock()

	call.q, call.err = fetch()

	c.mu.Lock()
	delete(c.inFlight, name)
	if call.err == nil {
		if len(c.quotes) >= maxCachedQuotes {
			for k, q := range c.quotes {
				if !now.Before(q.ExpiresAt) {
					delete(c.quotes, k)
				}
			}
			if len(c.quotes) >= maxCachedQuotes {
				clear(c.quotes)
			}
		}
		c.quotes[name] = call.q
	}
	c.mu.Unlock()
	close(call.done)
	return call.q, call.err
}

// Quote implements tools.PlanEnv: the registrar's domain-check for domain,
// from the quote cache, or under the shared read-only quote token. Only a
// request that reaches Cloudflare counts against quotes_per_minute.
func (p *Pipeline) Quote(ctx context.Context, domain string) (tools.Quote, error) {
	return p.quoteCache.get(ctx, domain, p.now(), func() (tools.Quote, error) {
		if pr, ok := principalFrom(ctx); ok && !p.quotes.allow(pr.Name, p.now()) {
			return tools.Quote{}, &tools.ToolError{Code: "rate_limited", Message: fmt.Sprintf(
				"price check refused: at most %d registrar price checks a minute per agent; wait a moment, or reuse the price you already have", p.cfg.QuotesPerMinute)}
		}
		// Others may be waiting on this answer: a caller that goes away
		// does not cut it short (the request has its own timeouts).
		fctx := context.WithoutCancel(ctx)
		var out cloudflare.DomainCheck
		err := p.quoteSession.Use(fctx, func(s *cloudflare.Session) error {
			checks, err := s.CheckDomains(fctx, domain)
			if err != nil {
				return err
			}
			if len(checks) != 1 {
				return fmt.Errorf("registrar answered for %d names, asked for 1", len(checks))
			}
			out = checks[0]
			return nil
		})
		var le *cloudflare.LimitError
		if errors.As(err, &le) {
			return tools.Quote{}, &tools.ToolError{Code: "rate_limited", Message: "price check refused: " + le.Error()}
		}
		if err != nil {
			return tools.Quote{}, err
		}
		return tools.Quote{DomainCheck: out, ExpiresAt: p.now().Add(p.quoteCache.ttl)}, nil
	})
}

// errQuoteNeeded is what planning from the cache alone stops with when a
// live quote would be needed.
var errQuoteNeeded = &tools.ToolError{Code: "quote_needed", Message: "no cached registrar quote"}

// cachedQuotes is the pipeline as a PlanEnv that never reaches Cloudflare:
// quotes come from the cache or planning stops with errQuoteNeeded. A plan
// made with it needs no policy check first (nothing leaves tollgate), so
// the check on the arguments and the check on the plan go in one call.
type cachedQuotes struct{ planEnv }

func (c cachedQuotes) Quote(_ context.Context, domain string) (tools.Quote, error) {
	if q, ok := c.quoteCache.cached(domain, c.now()); ok {
		return q, nil
	}
	return tools.Quote{}, errQuoteNeeded
}

// ZoneFor implements tools.Lookup: a lookup needs Cloudflare.
func (cachedQuotes) ZoneFor(context.Context, string) (cloudflare.Zone, error) {
	return cloudflare.Zone{}, errQuoteNeeded
}

// CustomDomains implements tools.Lookup: a lookup needs Cloudflare.
func (cachedQuotes) CustomDomains(context.Context, cloudflare.DomainFilter) ([]cloudflare.CustomDomain, error) {
	return nil, errQuoteNeeded
}

// sharedResources says where a shared token's groups apply.
func sharedResources(p cloudflare.Purpose) string {
	if len(p.Permissions().Zone) > 0 {
		return "this account and all its zones"
	}
	return "this account only"
}

// sharedQuoteHooks record the shared quote token's mint and revocation once
// each in the audit trail; a mint that cannot be recorded is not used.
func sharedQuoteHooks(db *ledger.DB, requestIP string, log func(msg string, args ...any)) cloudflare.SharedHooks {
	return cloudflare.SharedHooks{
		Minted: func(ctx context.Context, s *cloudflare.Session) error {
			return db.Append(ctx, ledger.NewEvent("token.minted", "system", "", map[string]any{
				"token_id": s.TokenID, "purpose": string(s.Purpose), "expires_at": s.ExpiresAt, "shared": true,
				"permission_groups": s.PermissionGroups, "resources": sharedResources(s.Purpose), "request_ip": requestIP,
			}))
		},
		Revoked: func(ctx context.Context, s *cloudflare.Session, err error) {
			ev := ledger.NewEvent("token.revoked", "system", "", map[string]any{"token_id": s.TokenID, "purpose": string(s.Purpose), "shared": true})
			if err != nil {
				log("shared token revoke failed; the start-up sweeper will delete it", "token_id", s.TokenID, "err", err)
				ev = ledger.NewEvent("token.revoke_failed", "system", "", map[string]any{"token_id": s.TokenID, "error": err.Error(), "shared": true})
			}
			actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
			defer cancel()
			if aerr := db.Append(actx, ev); aerr != nil {
				log("audit of the shared token's revocation failed", "token_id", s.TokenID, "err", aerr)
			}
		},
	}
}
