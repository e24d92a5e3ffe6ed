package approvals_test

import (
	"context"
	"testing"

	"github.com/tollgatehq/tollgate/approvals"
	"github.com/tollgatehq/tollgate/approvals/approvalstest"
)

// BenchmarkDecideCLI is the local approver's vote: policy check and one
// transaction, no Slack.
func BenchmarkDecideCLI(b *testing.B) {
	f := approvalstest.New(b, func(o *approvals.Options, _ *approvalstest.Fixture) { o.OnDecided = nil })
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		b.StopTimer()
		r := f.Request(nil)
		b.StartTimer()
		if _, err := f.Svc.Decide(ctx, approvals.VoteInput{RequestID: r.ID, Approver: "alice", Via: approvals.ViaCLI, Outcome: approvals.OutcomeApprove}); err != nil {
			b.Fatal(err)
		}
	}
}
