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
		v := opView(t, e.call(webBot, "get_operation", map[string]any{"operation_id": id}))
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
