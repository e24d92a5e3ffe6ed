package cloudflare

import (
	"context"
	"fmt"
	"math"
	"testing"

	"github.com/tollgatehq/tollgate/cloudflare/sandbox"
)

// benchEnv is newEnv without logs, audit or rate limits: a benchmark sends
// far more than Cloudflare's 1,200 requests per 5 minutes.
func benchEnv(b *testing.B) *env {
	e := newEnv(b, func(c *Config) { c.Observer, c.Logger, c.RateLimit = nil, nil, math.MaxInt32 })
	e.sb.SetRateLimit(sandbox.RateLimit{Off: true})
	return e
}

// BenchmarkSessionMintRevoke is the cost a per-operation token adds to an
// execution: mint (POST tokens, permission groups cached) plus revoke
// (DELETE tokens), against the sandbox over loopback HTTP.
func BenchmarkSessionMintRevoke(b *testing.B) {
	e := benchEnv(b)
	ctx := context.Background()
	e.session(b, PurposeDeploy, "warm") // fills the permission-group cache
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		s, err := e.b.Session(ctx, PurposeDeploy, fmt.Sprintf("bench-%d", i))
		if err != nil {
			b.Fatal(err)
		}
		if err := s.Close(ctx); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkCheckDomains is one domain-check round trip through cloudflare-go
// and the sandbox with an open session.
func BenchmarkCheckDomains(b *testing.B) {
	e := benchEnv(b)
	ctx := context.Background()
	s := e.session(b, PurposeQuote, "bench")
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		got, err := s.CheckDomains(ctx, "bench-price.com")
		if err != nil || !got[0].Registrable {
			b.Fatal(got, err)
		}
	}
}

// BenchmarkQuoteEndToEnd is what a check_domain tool call costs at
// Cloudflare's edge of tollgate: a domain-check under the shared quote
// token, whose mint and revoke are spread over every quote of its window.
func BenchmarkQuoteEndToEnd(b *testing.B) {
	e := benchEnv(b)
	ctx := context.Background()
	shared, err := e.b.Shared(PurposeQuote, SharedHooks{})
	if err != nil {
		b.Fatal(err)
	}
	defer shared.Close(ctx)
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		err := shared.Use(ctx, func(s *Session) error {
			_, err := s.CheckDomains(ctx, "bench-price.com")
			return err
		})
		if err != nil {
			b.Fatal(err)
		}
	}
}
