package approvals_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tollgatehq/tollgate/approvals"
	"github.com/tollgatehq/tollgate/approvals/approvalstest"
)

// recordingChannel is a approvals.Channel kept in memory: what the core asks of a
// channel, and nothing else, so the core's own bookkeeping is what is tested.
// The Slack channel is tested against slacktest in approvals/slack.
type recordingChannel struct {
	name string
	mu   sync.Mutex
	fail error // returned by Post and Update while set
	// posts[ref] is every state the request was shown in, in order.
	posts  map[string][]string
	alerts []string
	n      int
}

func newRecordingChannel(name string) *recordingChannel {
	return &recordingChannel{name: name, posts: map[string][]string{}}
}

func (c *recordingChannel) Name() string { return c.name }

func (c *recordingChannel) Post(_ context.Context, r approvals.Request) (string, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.fail != nil {
		return "", c.fail
	}
	c.n++
	ref := fmt.Sprintf("%s-%d", c.name, c.n)
	c.posts[ref] = []string{r.State}
	return ref, nil
}

func (c *recordingChannel) Update(_ context.Context, ref string, r approvals.Request) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.fail != nil {
		return c.fail
	}
	if _, ok := c.posts[ref]; !ok {
		return fmt.Errorf("update of unknown post %q", ref)
	}
	c.posts[ref] = append(c.posts[ref], r.State+"/"+r.ResultText)
	return nil
}

func (c *recordingChannel) Alert(_ context.Context, text string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.alerts = append(c.alerts, text)
	return nil
}

func (c *recordingChannel) setFail(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.fail = err
}

func (c *recordingChannel) shown(ref string) []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.posts[ref]...)
}

type slowDown struct{ d time.Duration }

func (e slowDown) Error() string             { return "rate limited" }
func (e slowDown) RetryAfter() time.Duration { return e.d }

// TestChannelsAreKeptInStepIndependently: every channel gets the request and
// every change; one that fails is retried with backoff (at least what it asks
// for) without holding up the other; a request made before a channel was
// attached is not posted there.
func TestChannelsAreKeptInStepIndependently(t *testing.T) {
	t.Parallel()
	approvalstest.EachBackend(t, testChannelsAreKeptInStepIndependently)
}

func testChannelsAreKeptInStepIndependently(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := approvalstest.New(t)
	before := f.Request(nil)
	good, flaky := newRecordingChannel("good"), newRecordingChannel("flaky")
	f.Svc.AddChannel(good)
	f.Svc.AddChannel(flaky)
	flaky.setFail(slowDown{30 * time.Second})

	r := f.Request(nil)
	goodRef, err := f.Svc.PostRef(ctx, r.ID, "good")
	if err != nil || goodRef == "" {
		t.Fatalf("good channel not posted: %q %v", goodRef, err)
	}
	if ref, _ := f.Svc.PostRef(ctx, r.ID, "flaky"); ref != "" {
		t.Fatalf("failing channel has a post: %q", ref)
	}
	var attempts int
	var next int64
	if err := f.DB.QueryRowContext(ctx, `SELECT attempts, next_at FROM approval_posts WHERE request_id = ? AND channel = 'flaky'`, r.ID).Scan(&attempts, &next); err != nil {
		t.Fatal(err)
	}
	if attempts != 1 || time.Unix(0, next).Sub(f.Clock.Now()) != 30*time.Second {
		t.Fatalf("attempts %d, retry in %v; want 1 and the 30s the channel asked for", attempts, time.Unix(0, next).Sub(f.Clock.Now()))
	}

	// A decision reaches the good channel at once; the flaky one still waits.
	if _, err := f.Svc.Decide(ctx, approvals.VoteInput{RequestID: r.ID, Approver: "alice", Via: approvals.ViaWeb, Outcome: approvals.OutcomeApprove}); err != nil {
		t.Fatal(err)
	}
	if got := good.shown(goodRef); len(got) != 2 || got[1] != approvals.StateApproved+"/" {
		t.Fatalf("good channel showed %v", got)
	}
	flaky.setFail(nil)
	f.Svc.Tick(ctx)
	if ref, _ := f.Svc.PostRef(ctx, r.ID, "flaky"); ref != "" {
		t.Fatal("retried before the backoff")
	}
	f.Clock.Advance(30 * time.Second)
	f.Svc.Tick(ctx)
	// Never posted and no longer pending: nothing is asked of anyone.
	if ref, _ := f.Svc.PostRef(ctx, r.ID, "flaky"); ref != "" || len(flaky.posts) != 0 {
		t.Fatalf("a decided request was posted late: %q", ref)
	}

	// The execution result is one more change, shown where the request was posted.
	if err := f.Svc.Finish(ctx, r.ID, "registered"); err != nil {
		t.Fatal(err)
	}
	if got := good.shown(goodRef); len(got) != 3 || got[2] != approvals.StateApproved+"/registered" {
		t.Fatalf("good channel showed %v", got)
	}
	if ref, _ := f.Svc.PostRef(ctx, before.ID, "good"); ref != "" {
		t.Fatalf("a request made before the channel was attached was posted: %q", ref)
	}

	if err := f.Svc.Notify(ctx, "budget team:web blocked"); err != nil {
		t.Fatal(err)
	}
	if len(good.alerts) != 1 || len(flaky.alerts) != 1 {
		t.Fatalf("alerts %v %v, want one each", good.alerts, flaky.alerts)
	}
}

func TestFreeze(t *testing.T) { t.Parallel(); approvalstest.EachBackend(t, testFreeze) }

func testFreeze(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := approvalstest.New(t)
	r := f.Request(nil)
	tests := []struct {
		name string
		in   approvals.FreezeInput
		want error
		code string
	}{
		{"unknown channel user", approvals.FreezeInput{RequestID: r.ID, User: "U0EVE", Via: approvals.ViaSlack}, approvals.ErrNotApprover, "not_approver"},
		{"missing request", approvals.FreezeInput{RequestID: "apr_missing", Approver: "bob", Via: approvals.ViaWeb}, approvals.ErrNotFound, "not_found"},
		{"bad request id", approvals.FreezeInput{RequestID: "../x", Approver: "bob", Via: approvals.ViaWeb}, approvals.ErrInvalidInput, "invalid_input"},
		{"unknown via", approvals.FreezeInput{RequestID: r.ID, Approver: "bob", Via: "fax"}, approvals.ErrInvalidInput, "invalid_input"},
	}
	for _, tt := range tests {
		if _, err := f.Svc.Freeze(ctx, tt.in); !errors.Is(err, tt.want) {
			t.Errorf("%s: %v, want %v", tt.name, err, tt.want)
		}
	}
	codes := f.Audit.Codes(t, approvals.EventRejected)
	if len(codes) != len(tests) {
		t.Fatalf("audited refusals %v", codes)
	}
	for i, tt := range tests {
		if codes[i] != tt.code {
			t.Errorf("%s audited as %s, want %s", tt.name, codes[i], tt.code)
		}
	}
	select {
	case got := <-f.Frozen:
		t.Fatalf("refused freeze reached OnFreeze: %s", got)
	default:
	}

	got, err := f.Svc.Freeze(ctx, approvals.FreezeInput{RequestID: r.ID, Approver: "bob", Via: approvals.ViaWeb})
	if err != nil || got.Agent != "web-bot" {
		t.Fatalf("Freeze = %+v, %v", got, err)
	}
	if by := <-f.Frozen; by != "web-bot by bob via web" {
		t.Fatalf("OnFreeze(%s)", by)
	}
	if ev := f.Audit.Events(t, approvals.EventFreezeRequested); len(ev) != 1 || ev[0].Actor != "web:bob" || ev[0].Data["via"] != approvals.ViaWeb {
		t.Fatalf("freeze audit %+v", ev)
	}

	off := approvalstest.New(t, func(o *approvals.Options, _ *approvalstest.Fixture) { o.OnFreeze = nil })
	if _, err := off.Svc.Freeze(ctx, approvals.FreezeInput{RequestID: off.Request(nil).ID, Approver: "bob", Via: approvals.ViaCLI}); !errors.Is(err, approvals.ErrFreezeUnavailable) {
		t.Fatalf("without OnFreeze: %v", err)
	}
	broken := approvalstest.New(t, func(o *approvals.Options, _ *approvalstest.Fixture) {
		o.OnFreeze = func(context.Context, string, approvals.Approver, string) error {
			return errors.New("ledger is read-only")
		}
	})
	_, err = broken.Svc.Freeze(ctx, approvals.FreezeInput{RequestID: broken.Request(nil).ID, Approver: "bob", Via: approvals.ViaCLI})
	if !errors.Is(err, approvals.ErrFreezeFailed) || !strings.Contains(err.Error(), "ledger is read-only") {
		t.Fatalf("failing OnFreeze: %v", err)
	}
	if codes := broken.Audit.Codes(t, approvals.EventRejected); len(codes) != 1 || codes[0] != "freeze_failed" {
		t.Fatalf("failed freeze audited as %v", codes)
	}
}

func TestRetryDelayIsCapped(t *testing.T) {
	t.Parallel()
	approvalstest.EachBackend(t, testRetryDelayIsCapped)
}

func testRetryDelayIsCapped(t *testing.T) {
	t.Parallel()
	f := approvalstest.New(t)
	for attempts, want := range []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second, 8 * time.Second} {
		if d := approvals.RetryDelay(f.Svc, attempts); d != want {
			t.Errorf("retryDelay(%d) = %v, want %v", attempts, d, want)
		}
	}
}

// heldChannel is a channel whose Post waits until released: a channel call
// in flight.
type heldChannel struct {
	*recordingChannel
	entered chan struct{}
	release chan struct{}
}

func (c *heldChannel) Post(ctx context.Context, r approvals.Request) (string, error) {
	c.entered <- struct{}{}
	select {
	case <-c.release:
	case <-ctx.Done():
		return "", ctx.Err()
	}
	return c.recordingChannel.Post(ctx, r)
}

// TestOnePostAcrossProcesses: two processes on one database, each with the
// channel attached (replicas with Slack configured alike). While the process
// that made a request is posting it, the other's retry sweep finds it
// unposted and must not post it too; once it is posted, nothing more is. A
// claim whose process died mid-post lapses after twice the channel timeout,
// and the other posts it then.
func TestOnePostAcrossProcesses(t *testing.T) {
	t.Parallel()
	approvalstest.EachBackend(t, testOnePostAcrossProcesses)
}

func testOnePostAcrossProcesses(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := approvalstest.New(t)
	other := f.OtherProcess()
	mine := &heldChannel{recordingChannel: newRecordingChannel("chat"), entered: make(chan struct{}, 1), release: make(chan struct{})}
	theirs := newRecordingChannel("chat")
	f.Svc.AddChannel(mine)
	other.AddChannel(theirs)

	made := make(chan approvals.Request, 1)
	go func() { made <- f.Request(nil) }()
	select {
	case <-mine.entered:
	case <-time.After(time.Minute): // a hang guard only
		t.Fatal("the request was never posted")
	}
	other.Tick(ctx) // the other process's sweep, while the post is in flight
	if n := theirs.count(); n != 0 {
		t.Fatalf("the other process posted a request being posted: %d posts", n)
	}
	close(mine.release)
	r := <-made
	ref, err := f.Svc.PostRef(ctx, r.ID, "chat")
	if err != nil || ref == "" {
		t.Fatalf("post of %s: %q %v", r.ID, ref, err)
	}
	f.Clock.Advance(time.Hour)
	other.Tick(ctx)
	if n, m := theirs.count(), mine.count(); n != 0 || m != 1 {
		t.Fatalf("posts: %d by the process that made it, %d by the other; want 1 and 0", m, n)
	}

	// A process that claimed a post and died mid-call leaves its claim (as
	// written here); the other's sweep waits for it to lapse, then posts.
	mine.setFail(errors.New("slack is down"))
	r2 := f.Request(func(r *approvals.Request) { r.ExpiresAt = f.Clock.Now().Add(2 * time.Hour) })
	<-mine.entered
	claim := f.Clock.Now().Add(2 * approvals.DefaultChannelTimeout)
	if _, err := f.DB.ExecContext(ctx, `UPDATE approval_posts SET claimed_until = ?, next_at = 0 WHERE request_id = ?`, claim.UnixNano(), r2.ID); err != nil {
		t.Fatal(err)
	}
	other.Tick(ctx)
	if n := theirs.count(); n != 0 {
		t.Fatalf("the other process posted under a live claim: %d posts", n)
	}
	f.Clock.Advance(2 * approvals.DefaultChannelTimeout)
	other.Tick(ctx)
	if ref, err := other.PostRef(ctx, r2.ID, "chat"); err != nil || ref == "" || theirs.count() != 1 {
		t.Fatalf("a lapsed claim was not taken over: ref %q %v, %d posts", ref, err, theirs.count())
	}
}

// count is how many posts the channel made.
func (c *recordingChannel) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.posts)
}
