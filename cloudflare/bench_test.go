package cloudflare

import (
	"context"
	"fmt"
	"testing"
)

// BenchmarkSessionMintRevoke is the cost a per-operation token adds to an
// execution: mint (POST tokens, permission groups cached) plus revoke
// (DELETE tokens), against the sandbox over loopback HTTP.
func BenchmarkSessionMintRevoke(b *testing.B) {
	e := newEnv(b, func(c *Config) { c.Observer, c.Logger = nil, nil })
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
	e := newEnv(b, func(c *Config) { c.Observer, c.Logger = nil, nil })
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
// Cloudflare's edge of tollgate: mint, one domain-check, revoke.
func BenchmarkQuoteEndToEnd(b *testing.B) {
	e := newEnv(b, func(c *Config) { c.Observer, c.Logger = nil, nil })
	ctx := context.Background()
	e.session(b, PurposeQuote, "warm")
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		s, err := e.b.Session(ctx, PurposeQuote, fmt.Sprintf("q-%d", i))
		if err != nil {
			b.Fatal(err)
		}
		if _, err := s.CheckDomains(ctx, "bench-price.com"); err != nil {
			b.Fatal(err)
		}
		if err := s.Close(ctx); err != nil {
			b.Fatal(err)
		}
	}
}
