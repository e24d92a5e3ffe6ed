package slack

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/tollgatehq/tollgate/approvals"

	slackapi "github.com/slack-go/slack"
	"github.com/slack-go/slack/slacktest"
	"github.com/slack-go/slack/socketmode"
	"golang.org/x/net/websocket"
)

func callback(t testing.TB, payload map[string]any) (slackapi.InteractionCallback, json.RawMessage) {
	t.Helper()
	raw, err := json.Marshal(payload)
	if err != nil {
		t.Fatal(err)
	}
	var cb slackapi.InteractionCallback
	if err := json.Unmarshal(raw, &cb); err != nil {
		t.Fatal(err)
	}
	return cb, raw
}

func interactiveEvent(t testing.TB, envelope string, payload map[string]any) socketmode.Event {
	cb, raw := callback(t, payload)
	return socketmode.Event{
		Type:    socketmode.EventTypeInteractive,
		Data:    cb,
		Request: &socketmode.Request{Type: socketmode.RequestTypeInteractive, EnvelopeID: envelope, Payload: raw},
	}
}

// TestSocketModeDispatch drives the Socket Mode path with events constructed
// in-process, as socketmode.Client emits them.
func TestSocketModeDispatch(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newFixture(t, withSlack())
	api := slackapi.New("xoxb-test-token", slackapi.OptionAPIURL(f.slack.srv.GetAPIURL()), slackapi.OptionAppLevelToken("xapp-1-test"))
	client := socketmode.New(api)

	r := f.Request(nil)
	f.ch.handleSocketEvent(ctx, client, interactiveEvent(t, "env-1", blockActionPayload("U0ALICE", ActionIDApprove, r.ID)))
	d := f.MustDecided(approvals.StateApproved)
	if d.Votes[0].Via != approvals.ViaSocket {
		t.Fatalf("via %s", d.Votes[0].Via)
	}
	if ev := f.Audit.Events(t, approvals.EventVoted); len(ev) != 1 || ev[0].Data["via"] != approvals.ViaSocket || ev[0].Actor != "slack:U0ALICE" {
		t.Fatalf("vote audit %+v", ev)
	}

	// A redelivered envelope is acknowledged, audited and ignored.
	r2 := f.Request(func(r *approvals.Request) { r.Quorum = 2 })
	f.ch.handleSocketEvent(ctx, client, interactiveEvent(t, "env-2", blockActionPayload("U0BOB", ActionIDApprove, r2.ID)))
	f.ch.handleSocketEvent(ctx, client, interactiveEvent(t, "env-2", blockActionPayload("U0CAROL", ActionIDApprove, r2.ID)))
	if got := f.Get(r2.ID); got.State != approvals.StatePending || got.Approvals() != 1 {
		t.Fatalf("replayed envelope counted: %+v", got.Votes)
	}
	if codes := f.Audit.Codes(t, EventRejected); strings.Join(codes, ",") != "replayed" {
		t.Fatalf("codes %v", codes)
	}
	f.NoDecision()

	// Non-approver over Socket Mode: same fixed reply, nothing changes.
	f.ch.handleSocketEvent(ctx, client, interactiveEvent(t, "env-3", blockActionPayload("U0EVE", ActionIDApprove, r2.ID)))
	if e := f.slack.lastEphemeral(t); e != ReplyNotApprover {
		t.Fatalf("ephemeral %q", e)
	}

	// The deny modal's submission arrives as an interactive envelope too.
	f.ch.handleSocketEvent(ctx, client, interactiveEvent(t, "env-4", viewSubmissionPayload("U0CAROL", r2.ID, "not this quarter")))
	if d := f.MustDecided(approvals.StateDenied); d.ID != r2.ID || d.Votes[1].Via != approvals.ViaSocket {
		t.Fatalf("denied %+v", d)
	}

	// Events tollgate does not subscribe to, and bad interactions, decide nothing.
	f.ch.handleSocketEvent(ctx, client, socketmode.Event{Type: socketmode.EventTypeEventsAPI, Request: &socketmode.Request{EnvelopeID: "env-5"}})
	f.ch.handleSocketEvent(ctx, client, interactiveEvent(t, "env-6", blockActionPayload("U0ALICE", "tollgate_nuke", r2.ID)))
	f.ch.handleSocketEvent(ctx, client, socketmode.Event{Type: socketmode.EventTypeInteractive, Data: "garbage", Request: &socketmode.Request{EnvelopeID: "env-7"}})
	if codes := f.Audit.Codes(t, EventRejected); strings.Join(codes, ",") != "replayed,bad_interaction,bad_payload" {
		t.Fatalf("codes %v", codes)
	}
	f.NoDecision()
}

// TestSocketModeRoundTrip runs RunSocketMode against slacktest's
// apps.connections.open and a WebSocket endpoint that speaks Socket Mode:
// hello, an interactive envelope, and the client's acknowledgement.
func TestSocketModeRoundTrip(t *testing.T) {
	t.Parallel()
	toClient := make(chan any, 4)
	acks := make(chan map[string]any, 4)
	done := make(chan struct{})
	ws := websocket.Handler(func(c *websocket.Conn) {
		go func() {
			for {
				var m map[string]any
				if err := websocket.JSON.Receive(c, &m); err != nil {
					return
				}
				acks <- m
			}
		}()
		_ = websocket.JSON.Send(c, map[string]any{"type": "hello", "num_connections": 1, "connection_info": map[string]any{"app_id": "A0TOLLGATE"}})
		for {
			select {
			case m := <-toClient:
				if err := websocket.JSON.Send(c, m); err != nil {
					return
				}
			case <-done:
				return
			}
		}
	})
	f := newFixture(t, withSlack(func(c slacktest.Customize) { c.Handle("/ws", ws.ServeHTTP) }))
	defer close(done)
	api := slackapi.New("xoxb-test-token", slackapi.OptionAPIURL(f.slack.srv.GetAPIURL()), slackapi.OptionAppLevelToken("xapp-1-test"))
	client := socketmode.New(api)
	ctx, cancel := context.WithCancel(context.Background())
	runErr := make(chan error, 1)
	go func() { runErr <- f.ch.RunSocketMode(ctx, client) }()

	r := f.Request(nil)
	_, raw := callback(t, blockActionPayload("U0ALICE", ActionIDApprove, r.ID))
	toClient <- map[string]any{"envelope_id": "env-rt-1", "type": "interactive", "accepts_response_payload": false, "payload": raw}
	select {
	case a := <-acks:
		if a["envelope_id"] != "env-rt-1" {
			t.Fatalf("ack %v", a)
		}
	case <-time.After(2 * time.Minute):
		t.Fatal("no ack over the WebSocket")
	}
	if d := f.MustDecided(approvals.StateApproved); d.ID != r.ID || d.Votes[0].Via != approvals.ViaSocket {
		t.Fatalf("decided %+v", d)
	}

	// A view_submission's answer travels in the ack payload.
	r2 := f.Request(nil)
	_, raw = callback(t, viewSubmissionPayload("U0BOB", r2.ID, ""))
	toClient <- map[string]any{"envelope_id": "env-rt-2", "type": "interactive", "accepts_response_payload": true, "payload": raw}
	select {
	case a := <-acks:
		p, _ := a["payload"].(map[string]any)
		if a["envelope_id"] != "env-rt-2" || p["response_action"] != "errors" {
			t.Fatalf("ack %v", a)
		}
	case <-time.After(2 * time.Minute):
		t.Fatal("no ack for the modal")
	}
	f.NoDecision()

	cancel()
	select {
	case err := <-runErr:
		if err != nil {
			t.Fatalf("RunSocketMode: %v", err)
		}
	case <-time.After(2 * time.Minute):
		t.Fatal("RunSocketMode did not stop")
	}
}
