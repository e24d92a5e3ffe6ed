package authz

import (
	"context"
	"slices"
	"testing"
	"time"
)

// reportPercentiles adds p50/p99 latency (µs) of the recorded samples.
func reportPercentiles(b *testing.B, samples []time.Duration) {
	b.Helper()
	if len(samples) == 0 {
		return
	}
	slices.Sort(samples)
	at := func(p float64) float64 {
		i := int(p * float64(len(samples)-1))
		return float64(samples[i].Nanoseconds()) / 1e3
	}
	b.ReportMetric(at(0.50), "p50-µs")
	b.ReportMetric(at(0.99), "p99-µs")
}

// BenchmarkDecisionLatency is one Check (one resource, one action, outputs
// evaluated) through the managed PDP over its unix socket: the extra cost
// authorization adds to a tool call.
func BenchmarkDecisionLatency(b *testing.B) {
	c := sharedClient(b)
	ctx := context.Background()
	p := webAgent()
	r := domain("pricey", "com", 3, 35_500_000, "standard")
	if d := c.Check(ctx, p, r, "register")["register"]; !d.Allowed {
		b.Fatalf("warm-up: %v", d)
	}
	samples := make([]time.Duration, 0, b.N)
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		start := time.Now()
		d := c.Check(ctx, p, r, "register")["register"]
		samples = append(samples, time.Since(start))
		if !d.Allowed {
			b.Fatalf("decision: %v", d)
		}
	}
	b.StopTimer()
	reportPercentiles(b, samples)
}

// BenchmarkDecisionLatencyDenied is the deny path (reason from an output).
func BenchmarkDecisionLatencyDenied(b *testing.B) {
	c := sharedClient(b)
	ctx := context.Background()
	p := webAgent()
	r := domain("example", "xyz", 1, 2_000_000, "standard")
	samples := make([]time.Duration, 0, b.N)
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		start := time.Now()
		d := c.Check(ctx, p, r, "register")["register"]
		samples = append(samples, time.Since(start))
		if d.Allowed || d.Unavailable {
			b.Fatalf("decision: %v", d)
		}
	}
	b.StopTimer()
	reportPercentiles(b, samples)
}

// BenchmarkCheckBatch is the estimate_cost shape: several resources and
// actions in one CheckResources call.
func BenchmarkCheckBatch(b *testing.B) {
	c := sharedClient(b)
	ctx := context.Background()
	p := webAgent()
	checks := []Check{
		{Resource: domain("tollgate-demo", "dev", 1, 12_000_000, "standard"), Actions: []string{"check", "estimate", "register"}},
		{Resource: domain("pricey", "com", 3, 35_500_000, "standard"), Actions: []string{"estimate", "register"}},
		{Resource: workerScript("web-api", "preview", 20_000), Actions: []string{"estimate", "deploy"}},
		{Resource: operation("op_1", "web-bot"), Actions: []string{"read"}},
	}
	samples := make([]time.Duration, 0, b.N)
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		start := time.Now()
		res := c.CheckBatch(ctx, p, checks)
		samples = append(samples, time.Since(start))
		if !res[0][2].Allowed || !res[3][0].Allowed {
			b.Fatalf("batch: %v", res)
		}
	}
	b.StopTimer()
	reportPercentiles(b, samples)
}

// BenchmarkDecisionParallel is throughput with concurrent tool calls.
func BenchmarkDecisionParallel(b *testing.B) {
	c := sharedClient(b)
	p := webAgent()
	r := domain("tollgate-demo", "dev", 1, 12_000_000, "standard")
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if d := c.Check(context.Background(), p, r, "register")["register"]; !d.Allowed {
				b.Errorf("decision: %v", d)
				return
			}
		}
	})
}

// BenchmarkBuildRequest is the client-side share of a check: attribute
// checks, conversion to protobuf values and the requests' rules, no network.
func BenchmarkBuildRequest(b *testing.B) {
	p := webAgent()
	r := domain("tollgate-demo", "dev", 1, 12_000_000, "standard")
	b.ReportAllocs()
	for b.Loop() {
		if _, err := buildPrincipal(p); err != nil {
			b.Fatal(err)
		}
		if _, err := buildResource(r); err != nil {
			b.Fatal(err)
		}
	}
}
