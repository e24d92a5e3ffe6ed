package slack

import (
	"context"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tollgatehq/tollgate/approvals"
)

// BenchmarkSlackClickToDecided measures a signed Approve click arriving at the
// interactivity handler (signature check, replay check, policy check, vote
// transaction with audit) until OnDecided fires, against a real SQLite file.
// ns/op also includes the chat.update to slacktest that follows OnDecided.
func BenchmarkSlackClickToDecided(b *testing.B) {
	var decidedAt atomic.Int64
	f := newFixture(b, withSlack(), func(o *approvals.Options, _ *fixture) {
		o.OnDecided = func(context.Context, approvals.Request) { decidedAt.Store(time.Now().UnixNano()) }
	})
	h := f.ch.Handler()
	lat := make([]time.Duration, 0, b.N)
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		b.StopTimer()
		r := f.Request(nil)
		body := signedBody(b, blockActionPayload("U0ALICE", ActionIDApprove, r.ID))
		ts := strconv.FormatInt(time.Now().Unix(), 10)
		req := interactionRequest(body, ts, sign(testSecret, ts, body))
		rec := httptest.NewRecorder()
		decidedAt.Store(0)
		b.StartTimer()
		start := time.Now()
		h.ServeHTTP(rec, req)
		b.StopTimer()
		if rec.Code != http.StatusOK || decidedAt.Load() == 0 {
			b.Fatalf("click not decided: %d %s", rec.Code, rec.Body)
		}
		lat = append(lat, time.Duration(decidedAt.Load()-start.UnixNano()))
		b.StartTimer()
	}
	b.StopTimer()
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs-to-decided")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs-to-decided")
}

// BenchmarkRequestBlocks builds the largest message (long module and reason).
func BenchmarkRequestBlocks(b *testing.B) {
	r := goldenDeploy()
	b.ReportAllocs()
	for b.Loop() {
		_ = RequestBlocks(r, goldenNow)
	}
}
