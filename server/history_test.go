package server

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/tollgatehq/tollgate/ledger"
)

// Polling get_operation is how an agent resumes a call that waits for a
// human. Each read is audited against the operation, but must not grow the
// history the agent gets back (found by BenchmarkPolicyCheckOverhead, whose
// get_operation calls slowed down with every iteration).
func TestPollingGetOperationKeepsHistoryStable(t *testing.T) {
	t.Parallel()
	e := newEnv(t, withConfig(func(c *Config) { c.Approvals.Wait = 0 }))
	id := opView(t, e.call(webBot, "register_domain", registerArgs("poll-history.dev"))).OperationID
	e.waitState(id, ledger.StateAwaitingApproval)
	e.pendingApproval(id) // its audit event is the last one before a human acts

	const polls = 5
	var first []string
	for i := range polls {
		v := opView(t, e.call(webBot, "get_operation", map[string]any{"operation_id": id, "history": true}))
		var events []string
		for _, h := range v.History {
			if h.Event == "policy.decision" && strings.Contains(h.Note, "operation:") {
				t.Fatalf("poll %d: history shows a read of the operation: %+v", i, h)
			}
			events = append(events, h.Event)
		}
		if i == 0 {
			first = events
			if len(first) == 0 {
				t.Fatal("history is empty")
			}
			continue
		}
		if strings.Join(events, ",") != strings.Join(first, ",") {
			t.Fatalf("poll %d: history changed from %v to %v", i, first, events)
		}
	}

	// The reads are still in the audit trail, against the operation.
	reads := 0
	if err := e.db.Events(context.Background(), ledger.EventQuery{OperationID: id, Types: []string{"policy.decision"}}, func(ev ledger.Event) error {
		var d struct {
			Resource string `json:"resource"`
			Action   string `json:"action"`
		}
		if err := json.Unmarshal(ev.Data, &d); err != nil {
			return err
		}
		if d.Resource == "operation:"+id && d.Action == "read" {
			reads++
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if reads != polls {
		t.Fatalf("audit trail has %d reads of %s, want %d", reads, id, polls)
	}
}

// TestGetOperationIsCompactUnlessAskedForHistory: by default get_operation
// answers with the operation as it stands (a few hundred bytes an agent can
// poll); history=true adds every step of its story.
func TestGetOperationIsCompactUnlessAskedForHistory(t *testing.T) {
	t.Parallel()
	e := newEnv(t, withConfig(func(c *Config) { c.Approvals.Wait = 0 }))
	id := opView(t, e.call(webBot, "register_domain", registerArgs("compact.dev"))).OperationID
	e.approve(id, "bob")
	e.waitState(id, ledger.StateSucceeded)

	compact := e.call(webBot, "get_operation", map[string]any{"operation_id": id})
	full := e.call(webBot, "get_operation", map[string]any{"operation_id": id, "history": true})
	cv, fv := opView(t, compact), opView(t, full)
	if cv.Status != "succeeded" || cv.Approval == nil || cv.Result == nil || len(cv.History) != 0 {
		t.Fatalf("compact view %+v", cv)
	}
	events := map[string]bool{}
	for _, h := range fv.History {
		events[h.Event] = true
	}
	for _, want := range []string{"operation.state", "policy.decision", "token.minted", "cloudflare.request", "approval.granted"} {
		if !events[want] {
			t.Errorf("history=true has no %s step: %v", want, events)
		}
	}
	small, big := len(text(compact)), len(text(full))
	t.Logf("get_operation: %d bytes compact, %d bytes with %d history entries", small, big, len(fv.History))
	if small > 2000 || big < 2*small {
		t.Errorf("compact answer is %d bytes, with history %d: the default should be the small one", small, big)
	}
}
