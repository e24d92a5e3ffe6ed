package approvals_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/tollgatehq/tollgate/approvals"
	"github.com/tollgatehq/tollgate/approvals/approvalstest"
)

func TestResolve(t *testing.T) { t.Parallel(); approvalstest.EachBackend(t, testResolve) }

// testResolve: a request is found by its full id, a prefix of 6+ characters
// with or without apr_, or its operation id; a prefix two requests share is
// refused with both named; a short or malformed reference says what is allowed.
func testResolve(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := approvalstest.New(t)
	a := f.Request(func(r *approvals.Request) { r.ID, r.OperationID = "apr_abcdef1aaaaaaaaaa", "op_first" })
	b := f.Request(func(r *approvals.Request) { r.ID, r.OperationID = "apr_abcdef2bbbbbbbbbb", "op_second" })
	for ref, want := range map[string]string{
		a.ID: a.ID, "abcdef1": a.ID, "apr_abcdef2": b.ID, "ABCDEF2B": b.ID, "op_first": a.ID, " abcdef2bbb ": b.ID,
	} {
		got, err := f.Svc.Resolve(ctx, ref)
		if err != nil || got.ID != want {
			t.Errorf("Resolve(%q) = %s, %v; want %s", ref, got.ID, err, want)
		}
	}
	_, err := f.Svc.Resolve(ctx, "abcdef")
	var amb *approvals.AmbiguousError
	if !errors.As(err, &amb) || !errors.Is(err, approvals.ErrAmbiguous) || len(amb.Candidates) != 2 ||
		!strings.Contains(err.Error(), a.ID) || !strings.Contains(err.Error(), b.ID) {
		t.Fatalf("Resolve(abcdef) = %v; want both candidates", err)
	}
	for _, ref := range []string{"abcde", "apr_abc", "abc%ef", "abc_ef1", ""} {
		if _, err := f.Svc.Resolve(ctx, ref); !errors.Is(err, approvals.ErrInvalidInput) || !strings.Contains(err.Error(), "at least 6") {
			t.Errorf("Resolve(%q) = %v; want invalid input", ref, err)
		}
	}
	for _, ref := range []string{"zzzzzz", "op_nobody"} {
		if _, err := f.Svc.Resolve(ctx, ref); !errors.Is(err, approvals.ErrNotFound) {
			t.Errorf("Resolve(%q) = %v; want not found", ref, err)
		}
	}
	if got := approvals.ShortID(a.ID); got != "abcdef1a" {
		t.Errorf("ShortID = %q", got)
	}
}
