package slack

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	slackapi "github.com/slack-go/slack"
	"github.com/slack-go/slack/socketmode"

	"github.com/tollgatehq/tollgate/approvals"
	"github.com/tollgatehq/tollgate/approvals/display"
)

const (
	// maxInteractionBody bounds a Slack interactivity request; real payloads are a few KiB.
	maxInteractionBody = 1 << 20
	// seenRetention keeps replay keys for twice Slack's 5-minute signature
	// window: a timestamp may be up to 5 minutes in the past or the future.
	seenRetention = 10 * time.Minute
	// dispatchTimeout bounds the work one click triggers; the click's HTTP
	// request may go away first, and the decision must still finish.
	dispatchTimeout = 30 * time.Second
)

// Fixed replies to a click that changes nothing, shown only to the clicking user.
const (
	ReplyNotApprover     = "You are not a tollgate approver, so your click changed nothing. Ask the platform team to add your Slack user to the approvers."
	ReplySelfApproval    = "You are the accountable owner of this agent, so you cannot decide its requests: another approver has to. Nothing changed."
	ReplyExpired         = "This request expired before your click. Nothing was approved; the agent has to ask again."
	ReplyAlreadyDecided  = "This request was already decided; your click changed nothing."
	ReplyDuplicateVote   = "You already voted on this request; it needs another approver. Nothing changed."
	ReplyCancelled       = "This request was cancelled (the agent was frozen); your click changed nothing."
	ReplyWithdrawn       = "This request was withdrawn by the agent; your click changed nothing."
	ReplyNotFound        = "tollgate has no such approval request; nothing changed."
	ReplyNotAllowed      = "Policy does not allow you to decide this request, so nothing changed: "
	ReplyInvalid         = "tollgate could not read this click, so nothing changed."
	ReplyInternal        = "tollgate could not record your click (internal error), so nothing changed. Try again, or use `tollgate approvals` on the server."
	ReplyModalFailed     = "tollgate could not open the deny dialog, so nothing changed. Try again, or run `tollgate approvals deny ID --reason ...`."
	ReplyFreezeOff       = "Freezing from Slack is not enabled on this tollgate server, so nothing changed. Use `tollgate freeze --agent NAME`."
	ReplyDenyReasonEmpty = "Give a reason: the agent and the audit trail see it."
	ReplyMandateRefused  = "The standing approval was refused, so nothing was approved: "
	ReplyMandatesOff     = "Standing approvals are not enabled on this tollgate server, so nothing was approved."
	ReplyConsoleOff      = "The web console is not reachable from Slack on this server (no console.public_url), so there is no link to give."
)

// EventConsoleRefused is the audit event of a Review in console click that
// got no link.
const EventConsoleRefused = "console.link_refused"

// EventRejected is the audit event of an interactivity request that failed
// verification (bad signature, stale timestamp, replay).
const EventRejected = "slack.rejected"

// replyFor maps a refusal to the fixed reply the clicking user sees.
func replyFor(err error) string {
	var na *approvals.NotAllowedError
	var mr *approvals.MandateRefusedError
	switch {
	case errors.As(err, &na):
		return ReplyNotAllowed + display.Mrkdwn(na.Reason, 500)
	case errors.As(err, &mr):
		return ReplyMandateRefused + display.Mrkdwn(mr.Reason, 500) + ". Use Approve to approve this request alone."
	case errors.Is(err, approvals.ErrMandatesUnavailable):
		return ReplyMandatesOff
	case errors.Is(err, approvals.ErrNotApprover):
		return ReplyNotApprover
	case errors.Is(err, approvals.ErrSelfApproval):
		return ReplySelfApproval
	case errors.Is(err, approvals.ErrExpired):
		return ReplyExpired
	case errors.Is(err, approvals.ErrAlreadyDecided):
		return ReplyAlreadyDecided
	case errors.Is(err, approvals.ErrDuplicateVote):
		return ReplyDuplicateVote
	case errors.Is(err, approvals.ErrWithdrawn):
		return ReplyWithdrawn
	case errors.Is(err, approvals.ErrCancelled):
		return ReplyCancelled
	case errors.Is(err, approvals.ErrNotFound):
		return ReplyNotFound
	case errors.Is(err, approvals.ErrFreezeUnavailable):
		return ReplyFreezeOff
	case errors.Is(err, approvals.ErrInvalidInput):
		return ReplyInvalid
	}
	return ReplyInternal
}

// Handler serves POST /slack/interactions. Each request is verified
// over its raw body with the signing secret (slackapi.NewSecretsVerifier): a bad
// signature, missing headers or a timestamp more than 5 minutes away is
// answered 401, a replay of an already seen signature too, and each is audited
// as slack.rejected. A verified request must carry exactly one action with a
// known action id (block_actions: approve, deny → modal, freeze) or the deny
// modal's view_submission.
func (c *Channel) Handler() http.Handler {
	return http.HandlerFunc(c.serveInteraction)
}

func (c *Channel) serveInteraction(w http.ResponseWriter, req *http.Request) {
	if req.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		http.Error(w, "method not allowed: Slack interactivity requests are POST", http.StatusMethodNotAllowed)
		return
	}
	// The decision must complete even if Slack stops waiting for the answer.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(req.Context()), dispatchTimeout)
	defer cancel()
	meta := map[string]any{
		"remote_addr": req.RemoteAddr,
		"timestamp":   display.Text(req.Header.Get("X-Slack-Request-Timestamp"), 20),
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, req.Body, maxInteractionBody))
	if err != nil {
		c.auditSlack(ctx, "body_unreadable", "request body unreadable or above 1 MiB: "+err.Error(), meta)
		http.Error(w, "request body unreadable or above 1 MiB", http.StatusRequestEntityTooLarge)
		return
	}
	if code, err := c.verify(ctx, req.Header, body); err != nil {
		if code == "replayed" {
			if cb, perr := parseInteraction(body); perr == nil {
				addCallbackMeta(meta, cb)
			}
		}
		c.auditSlack(ctx, code, err.Error(), meta)
		status := http.StatusUnauthorized
		if code == "not_configured" || code == "replay_check_failed" {
			status = http.StatusServiceUnavailable
		}
		http.Error(w, err.Error(), status)
		return
	}
	cb, err := parseInteraction(body)
	if err != nil {
		c.auditSlack(ctx, "bad_payload", err.Error(), meta)
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	resp, err := c.dispatch(ctx, approvals.ViaSlack, cb)
	if err != nil {
		addCallbackMeta(meta, cb)
		c.auditSlack(ctx, "bad_interaction", err.Error(), meta)
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	if resp != nil {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(resp)
		return
	}
	w.WriteHeader(http.StatusOK)
}

// verify checks the Slack signature over the raw body and refuses replays. It
// returns a machine code with the error.
func (c *Channel) verify(ctx context.Context, h http.Header, body []byte) (string, error) {
	if c.secret == "" {
		return "not_configured", errors.New("slack interactivity is not configured on this server (no signing secret)")
	}
	sv, err := slackapi.NewSecretsVerifier(h, c.secret)
	switch {
	case errors.Is(err, slackapi.ErrExpiredTimestamp):
		return "stale_timestamp", errors.New("slack request timestamp is more than 5 minutes from now")
	case errors.Is(err, slackapi.ErrMissingHeaders):
		return "missing_headers", errors.New("X-Slack-Signature and X-Slack-Request-Timestamp are required")
	case err != nil:
		return "bad_signature", errors.New("malformed slack signature or timestamp")
	}
	if _, err := sv.Write(body); err != nil {
		return "bad_signature", errors.New("could not hash the request body")
	}
	if err := sv.Ensure(); err != nil {
		return "bad_signature", errors.New("slack signature does not match the request")
	}
	// Only a verified signature is remembered, so forged requests cannot poison the cache.
	fresh, err := c.markSeen(ctx, "sig:"+strings.ToLower(h.Get("X-Slack-Signature")))
	if err != nil {
		return "replay_check_failed", errors.New("could not check the request against replays; try again")
	}
	if !fresh {
		return "replayed", errors.New("this signed slack request was already received (replay)")
	}
	return "", nil
}

// markSeen records key and reports whether it was new.
func (c *Channel) markSeen(ctx context.Context, key string) (bool, error) {
	res, err := c.svc.Store().ExecContext(ctx, `INSERT INTO approval_slack_seen (key, seen_at) VALUES (?, ?) ON CONFLICT (key) DO NOTHING`,
		key, time.Now().UnixNano())
	if err != nil {
		return false, fmt.Errorf("record slack request: %w", err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return false, fmt.Errorf("record slack request: %w", err)
	}
	return n == 1, nil
}

// pruneSeen forgets replay keys older than any signature could still be valid.
// Slack's window is wall-clock time, so this uses the wall clock, not approvals.Options.Clock.
func (c *Channel) pruneSeen(ctx context.Context) error {
	_, err := c.svc.Store().ExecContext(ctx, `DELETE FROM approval_slack_seen WHERE seen_at < ?`, time.Now().Add(-seenRetention).UnixNano())
	return err
}

// rejectLog rate-limits the log lines of refused Slack requests: anyone who
// can reach the endpoint can send them, so within each minute the first
// rejectLogBurst get a line of their own and the rest are only counted, into
// one summary line when the minute is over (on the next refusal or the next
// housekeeping round, whichever comes first). The audit trail has its own
// limit, in the AuditFunc the server passes.
type rejectLog struct {
	mu      sync.Mutex
	window  time.Time // start of the current minute; zero before the first refusal
	logged  int       // lines written in the window
	dropped int       // refusals in the window without a line
}

const (
	rejectLogBurst  = 10
	rejectLogWindow = time.Minute
)

// note counts a refusal at now. It reports whether the refusal gets its own
// line, and how many refusals of a finished window went unlogged.
func (l *rejectLog) note(now time.Time) (own bool, unlogged int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	unlogged = l.rollLocked(now)
	if l.window.IsZero() {
		l.window = now
	}
	if l.logged < rejectLogBurst {
		l.logged++
		return true, unlogged
	}
	l.dropped++
	return false, unlogged
}

// due returns the refusals of a finished window that went unlogged, and
// starts afresh.
func (l *rejectLog) due(now time.Time) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.rollLocked(now)
}

func (l *rejectLog) rollLocked(now time.Time) int {
	if l.window.IsZero() || now.Sub(l.window) < rejectLogWindow {
		return 0
	}
	n := l.dropped
	l.window, l.logged, l.dropped = time.Time{}, 0, 0
	return n
}

// logUnlogged writes the summary line for refusals that had none.
func (c *Channel) logUnlogged(ctx context.Context, n int) {
	if n > 0 {
		c.log.WarnContext(ctx, "more slack requests were rejected than are logged one by one",
			slog.Int("unlogged", n), slog.Duration("within", rejectLogWindow), slog.Int("logged_per_window", rejectLogBurst))
	}
}

func (c *Channel) auditSlack(ctx context.Context, code, detail string, extra map[string]any) {
	data := map[string]any{"code": code, "reason": detail}
	for k, v := range extra {
		data[k] = v
	}
	own, unlogged := c.rejected.note(c.now())
	c.logUnlogged(ctx, unlogged)
	if own {
		c.log.WarnContext(ctx, "slack request rejected", slog.String("code", code), slog.String("reason", detail))
	}
	if err := c.svc.Record(ctx, EventRejected, "slack", "", data); err != nil {
		c.log.ErrorContext(ctx, "audit of a rejected slack request failed", slog.String("code", code), slog.String("error", err.Error()))
	}
}

func addCallbackMeta(meta map[string]any, cb slackapi.InteractionCallback) {
	meta["type"] = string(cb.Type)
	if cb.User.ID != "" {
		meta["slack_user_id"] = display.Text(cb.User.ID, 40)
	}
	if acts := cb.ActionCallback.BlockActions; len(acts) > 0 {
		meta["action_id"] = display.Text(acts[0].ActionID, 80)
		meta["request_id"] = display.Text(acts[0].Value, 80)
	}
	if cb.View.PrivateMetadata != "" {
		meta["request_id"] = display.Text(cb.View.PrivateMetadata, 80)
	}
}

// parseInteraction reads the form-encoded body Slack sends: one field,
// payload, holding the interaction as JSON.
func parseInteraction(body []byte) (slackapi.InteractionCallback, error) {
	form, err := url.ParseQuery(string(body))
	if err != nil {
		return slackapi.InteractionCallback{}, fmt.Errorf("body is not form-encoded: %w", err)
	}
	payload := form.Get("payload")
	if payload == "" {
		return slackapi.InteractionCallback{}, errors.New("form field payload is missing or empty")
	}
	var cb slackapi.InteractionCallback
	if err := json.Unmarshal([]byte(payload), &cb); err != nil {
		return slackapi.InteractionCallback{}, fmt.Errorf("payload is not a Slack interaction: %w", err)
	}
	return cb, nil
}

// dispatch acts on one verified interaction; the HTTP endpoint and Socket Mode
// share it. It returns the response body for a view_submission (nil closes the
// modal), or an error for an interaction tollgate does not understand. Refusals
// of a click are not errors: the user gets a fixed ephemeral reply.
func (c *Channel) dispatch(ctx context.Context, via string, cb slackapi.InteractionCallback) (any, error) {
	switch cb.Type {
	case slackapi.InteractionTypeBlockActions:
		acts := cb.ActionCallback.BlockActions
		if len(acts) != 1 || len(cb.ActionCallback.AttachmentActions) != 0 {
			return nil, fmt.Errorf("block_actions must carry exactly one block action, got %d", len(acts)+len(cb.ActionCallback.AttachmentActions))
		}
		a := acts[0]
		switch a.ActionID {
		case ActionIDApprove, ActionIDApproveMandate, ActionIDDeny, ActionIDFreeze, ActionIDConsole:
		default:
			return nil, fmt.Errorf("unknown action_id %q; known: %s, %s, %s, %s, %s", display.Text(a.ActionID, 80), ActionIDApprove, ActionIDApproveMandate, ActionIDDeny, ActionIDFreeze, ActionIDConsole)
		}
		if !approvals.ValidRequestID(a.Value) {
			return nil, fmt.Errorf("button value %q is not an approval request id", display.Text(a.Value, 80))
		}
		channel := cb.Channel.ID
		if channel == "" {
			channel = cb.Container.ChannelID
		}
		user := cb.User.ID
		switch a.ActionID {
		case ActionIDApprove:
			out, err := c.svc.Decide(ctx, approvals.VoteInput{RequestID: a.Value, Approver: c.approver(user), User: user, Via: via, Outcome: approvals.OutcomeApprove})
			switch {
			case err != nil:
				c.reply(ctx, channel, user, replyFor(err))
			case !out.Final:
				c.reply(ctx, channel, user, fmt.Sprintf("Your approval is recorded: %d of %d. Another approver has to approve before it runs.", out.Approvals, out.Needed))
			}
		case ActionIDApproveMandate:
			c.approveMandate(ctx, via, user, channel, a.Value)
		case ActionIDDeny:
			r, _, err := c.svc.Check(ctx, approvals.VoteInput{RequestID: a.Value, Approver: c.approver(user), User: user, Via: via, Outcome: approvals.OutcomeDeny})
			if err != nil {
				c.reply(ctx, channel, user, replyFor(err))
				return nil, nil
			}
			if c.api == nil {
				return nil, nil
			}
			if err := c.openDenyModal(ctx, cb.TriggerID, r); err != nil {
				c.log.WarnContext(ctx, "open deny modal", slog.String("request_id", r.ID), slog.String("error", err.Error()))
				c.reply(ctx, channel, user, ReplyModalFailed)
			}
		case ActionIDFreeze:
			c.freeze(ctx, via, user, channel, a.Value)
		case ActionIDConsole:
			c.consoleLink(ctx, user, channel, a.Value)
		}
		return nil, nil

	case slackapi.InteractionTypeViewSubmission:
		if cb.View.CallbackID != DenyModalCallbackID {
			return nil, fmt.Errorf("unknown view callback_id %q; known: %s", display.Text(cb.View.CallbackID, 80), DenyModalCallbackID)
		}
		id := cb.View.PrivateMetadata
		if !approvals.ValidRequestID(id) {
			return nil, fmt.Errorf("modal private_metadata %q is not an approval request id", display.Text(id, 80))
		}
		var reason string
		if cb.View.State != nil {
			reason = cb.View.State.Values[DenyReasonBlockID][DenyReasonActionID].Value
		}
		if strings.TrimSpace(reason) == "" {
			return slackapi.NewErrorsViewSubmissionResponse(map[string]string{DenyReasonBlockID: ReplyDenyReasonEmpty}), nil
		}
		if _, err := c.svc.Decide(ctx, approvals.VoteInput{RequestID: id, Approver: c.approver(cb.User.ID), User: cb.User.ID, Via: via, Outcome: approvals.OutcomeDeny, Reason: reason}); err != nil {
			return slackapi.NewErrorsViewSubmissionResponse(map[string]string{DenyReasonBlockID: replyFor(err)}), nil
		}
		return nil, nil
	}
	return nil, fmt.Errorf("unsupported interaction type %q; tollgate handles block_actions and view_submission", display.Text(string(cb.Type), 40))
}

// approveMandate handles Approve + allow N more: the clicking approver's
// vote and a standing approval with the defaults the server derives from
// the request now (the button carries only the request id, so a forged
// click cannot ask for more), through the core's ApproveWithMandate: both
// or neither. A refused mandate approves nothing, and the user is told why.
func (c *Channel) approveMandate(ctx context.Context, via, user, channel, requestID string) {
	name := c.approver(user)
	var spec approvals.MandateSpec
	if ap, ok := c.svc.Approver(name); ok {
		if r, err := c.svc.Get(ctx, requestID); err == nil {
			spec = c.svc.MandateOfferFor(ctx, &ap, r).Default
		}
	}
	out, m, err := c.svc.ApproveWithMandate(ctx, approvals.VoteInput{RequestID: requestID, Approver: name, User: user, Via: via, Outcome: approvals.OutcomeApprove}, spec)
	switch {
	case err != nil:
		c.reply(ctx, channel, user, replyFor(err))
	case !out.Final:
		c.reply(ctx, channel, user, fmt.Sprintf("Your approval is recorded (%d of %d), and standing approval %s is given: %s. Revoke it with %s.",
			out.Approvals, out.Needed, display.Code(m.ID, 40), display.Mrkdwn(m.Sentence, 500), display.Code("tollgate mandates revoke "+m.ID, 80)))
	default:
		c.reply(ctx, channel, user, fmt.Sprintf("Approved, and standing approval %s is given: %s. Revoke it with %s.",
			display.Code(m.ID, 40), display.Mrkdwn(m.Sentence, 500), display.Code("tollgate mandates revoke "+m.ID, 80)))
	}
}

// freeze handles the Freeze agent button through the core, which checks the
// approver and the policy and audits either way; the clicking user is told
// what happened.
func (c *Channel) freeze(ctx context.Context, via, user, channel, requestID string) {
	r, err := c.svc.Freeze(ctx, approvals.FreezeInput{RequestID: requestID, Approver: c.approver(user), User: user, Via: via})
	switch {
	case errors.Is(err, approvals.ErrFreezeFailed):
		c.reply(ctx, channel, user, fmt.Sprintf("Freezing agent %s failed, so it is not frozen: %s. Use %s.",
			display.Code(r.Agent, 100), display.Code(err.Error(), 300), display.Code("tollgate freeze --agent "+r.Agent, 130)))
	case err != nil:
		c.reply(ctx, channel, user, replyFor(err))
	default:
		c.reply(ctx, channel, user, fmt.Sprintf("Agent %s is frozen: its mutating calls are denied and its pending approvals cancelled. Unfreeze with %s.",
			display.Code(r.Agent, 100), display.Code("tollgate unfreeze --agent "+r.Agent, 130)))
	}
}

// consoleLink answers Review in console: the clicking user, verified by
// Slack's signature (or Socket Mode), gets a fresh one-time sign-in link bound
// to their own approver identity, in an ephemeral reply no one else sees. The
// message itself carries no link, so forwarding it, or copying the console
// page's address, signs nobody in.
func (c *Channel) consoleLink(ctx context.Context, user, channel, requestID string) {
	name := c.approver(user)
	if c.console == nil || name == "" {
		reason := "console links are not enabled on this server"
		reply := ReplyConsoleOff
		if name == "" {
			reason, reply = "not a configured approver: Slack user "+display.Text(user, 40), ReplyNotApprover
		}
		_ = c.svc.Record(ctx, EventConsoleRefused, "slack:"+display.Text(user, 40), "", map[string]any{"request_id": requestID, "reason": reason})
		c.reply(ctx, channel, user, reply)
		return
	}
	url, exp, err := c.console(ctx, name, requestID, user)
	if err != nil {
		c.log.WarnContext(ctx, "console link", slog.String("request_id", requestID), slog.String("error", err.Error()))
		c.reply(ctx, channel, user, ReplyInternal)
		return
	}
	c.reply(ctx, channel, user, fmt.Sprintf("Your sign-in link to review this request in the tollgate console, as approver %s: <%s|Review in console>. It is for you alone: it works once, until %s.",
		display.Code(name, 100), url, slackDate(exp)))
}

// reply shows text to the clicking user; failures are logged, never retried:
// the message itself already shows the request's true state.
func (c *Channel) reply(ctx context.Context, channel, user, text string) {
	if c.api == nil || user == "" {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	if err := c.ephemeral(ctx, channel, user, text); err != nil {
		c.log.WarnContext(ctx, "ephemeral reply failed", slog.String("slack_user_id", user), slog.String("error", err.Error()))
	}
}

// RunSocketMode receives interactions over Slack Socket Mode (for servers
// without a public URL) until ctx ends. client is built with
// socketmode.New(slackapi.New(botToken, slackapi.OptionAppLevelToken(appToken))).
// Every envelope is acknowledged; interactions go through the same dispatch as
// the HTTP endpoint, with envelope ids deduplicated instead of signatures.
func (c *Channel) RunSocketMode(ctx context.Context, client *socketmode.Client) error {
	if client == nil {
		return errors.New("socket mode: client is nil")
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errc := make(chan error, 1)
	go func() { errc <- client.RunContext(ctx) }()
	for {
		select {
		case <-ctx.Done():
			select {
			case <-errc:
			case <-time.After(5 * time.Second):
			}
			return nil
		case err := <-errc:
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("socket mode: %w", err)
		case evt := <-client.Events:
			c.handleSocketEvent(ctx, client, evt)
		}
	}
}

// handleSocketEvent acknowledges and dispatches one Socket Mode event.
func (c *Channel) handleSocketEvent(ctx context.Context, client *socketmode.Client, evt socketmode.Event) {
	ack := func(payload any) {
		if evt.Request == nil || evt.Request.EnvelopeID == "" {
			return
		}
		if err := client.AckCtx(ctx, evt.Request.EnvelopeID, payload); err != nil {
			c.log.WarnContext(ctx, "socket mode ack failed", slog.String("envelope_id", evt.Request.EnvelopeID), slog.String("error", err.Error()))
		}
	}
	switch evt.Type {
	case socketmode.EventTypeInteractive:
		if evt.Request == nil || evt.Request.EnvelopeID == "" {
			c.auditSlack(ctx, "bad_envelope", "socket mode interactive event without an envelope id", nil)
			return
		}
		meta := map[string]any{"envelope_id": display.Text(evt.Request.EnvelopeID, 80), "via": approvals.ViaSocket}
		cb, ok := evt.Data.(slackapi.InteractionCallback)
		if !ok {
			ack(nil)
			c.auditSlack(ctx, "bad_payload", "socket mode interactive payload is not a Slack interaction", meta)
			return
		}
		fresh, err := c.markSeen(ctx, "env:"+evt.Request.EnvelopeID)
		if err != nil {
			// Not processed: acknowledging without acting would lose the click
			// silently, so leave it unacknowledged and let Slack retry.
			c.log.ErrorContext(ctx, "socket mode replay check", slog.String("error", err.Error()))
			return
		}
		if !fresh {
			ack(nil)
			addCallbackMeta(meta, cb)
			c.auditSlack(ctx, "replayed", "socket mode envelope already received (replay or redelivery)", meta)
			return
		}
		dctx, cancel := context.WithTimeout(ctx, dispatchTimeout)
		defer cancel()
		if cb.Type == slackapi.InteractionTypeViewSubmission {
			// The modal's answer travels in the ack payload.
			resp, err := c.dispatch(dctx, approvals.ViaSocket, cb)
			if err != nil {
				addCallbackMeta(meta, cb)
				c.auditSlack(ctx, "bad_interaction", err.Error(), meta)
			}
			ack(resp)
			return
		}
		// Slack wants the ack within 3 seconds; the decision and replies follow.
		ack(nil)
		if _, err := c.dispatch(dctx, approvals.ViaSocket, cb); err != nil {
			addCallbackMeta(meta, cb)
			c.auditSlack(ctx, "bad_interaction", err.Error(), meta)
		}
	case socketmode.EventTypeEventsAPI, socketmode.EventTypeSlashCommand:
		// Not subscribed by tollgate's manifest; acknowledged so Slack does not retry.
		ack(nil)
	case socketmode.EventTypeConnecting, socketmode.EventTypeConnected, socketmode.EventTypeHello:
		c.log.DebugContext(ctx, "socket mode", slog.String("event", string(evt.Type)))
	case socketmode.EventTypeDisconnect:
		c.log.InfoContext(ctx, "socket mode: slack asked to reconnect")
	default:
		c.log.WarnContext(ctx, "socket mode", slog.String("event", string(evt.Type)), slog.String("detail", fmt.Sprint(evt.Data)))
	}
}

// Housekeep implements approvals.Housekeeper: it writes the summary line of
// refusals that had none and forgets replay keys no signature can reuse.
func (c *Channel) Housekeep(ctx context.Context) {
	c.logUnlogged(ctx, c.rejected.due(c.now()))
	if err := c.pruneSeen(ctx); err != nil && ctx.Err() == nil {
		c.log.WarnContext(ctx, "prune replay cache", slog.String("error", err.Error()))
	}
}
