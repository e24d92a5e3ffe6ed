package web

import (
	"context"
	"net/http"
	"testing"

	"github.com/tollgatehq/tollgate/approvals"
)

// BenchmarkInboxPage is one signed-in GET of the inbox with 50 pending
// requests (session lookup, List, Recent, template, 50 rows), against a real
// SQLite file. BenchmarkInboxList is its raw part in the same run: the two
// reads alone.
func BenchmarkInboxPage(b *testing.B) {
	f, c := benchInbox(b)
	b.ReportAllocs()
	for b.Loop() {
		resp, err := c.Get(f.srv.URL + "/console/")
		if err != nil || resp.StatusCode != http.StatusOK {
			b.Fatalf("inbox: %v %v", resp, err)
		}
		resp.Body.Close()
	}
}

func BenchmarkInboxList(b *testing.B) {
	f, _ := benchInbox(b)
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := f.Svc.List(ctx, approvals.StatePending); err != nil {
			b.Fatal(err)
		}
		if _, err := f.Svc.Recent(ctx, recentDecided, approvals.StateApproved, approvals.StateDenied, approvals.StateExpired, approvals.StateCancelled); err != nil {
			b.Fatal(err)
		}
	}
}

func benchInbox(b *testing.B) (*consoleFixture, *http.Client) {
	f := newConsole(b)
	for range 50 {
		f.Request(nil)
	}
	c := browser()
	f.signIn(c, "bob")
	return f, c
}
