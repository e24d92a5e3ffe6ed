// Package slack is the Slack channel of tollgate's approvals: it posts each
// request as a Block Kit message and keeps it up to date (approvals.Channel),
// takes the Approve, Deny (with a reason, in a modal) and Freeze agent clicks
// from the signed interactivity endpoint or Socket Mode, and hands every vote
// to the approvals core, which decides. Replies to a click that changed nothing
// are ephemeral and fixed.
package slack

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	slackapi "github.com/slack-go/slack"

	"github.com/tollgatehq/tollgate/approvals"
	"github.com/tollgatehq/tollgate/approvals/display"
)

// Name is the channel's name in the approvals core ("slack").
const Name = "slack"

// DefaultTimeout bounds each Slack Web API call the channel makes on its own
// (ephemeral replies, the deny modal).
const DefaultTimeout = 10 * time.Second

// Config configures a Channel.
type Config struct {
	// Client is the Web API client (slackapi.New(botToken, …)); nil means no
	// Web API: nothing is posted and no one gets replies, but the endpoint
	// still verifies clicks and votes.
	Client *slackapi.Client
	// Channel is where requests are posted (an id like C0123 or a name).
	Channel string
	// SigningSecret verifies the interactivity endpoint; empty = the endpoint
	// refuses every request.
	SigningSecret string
	// Clock is the time source for relative times on messages ("in 29m"):
	// the clock that expires requests. Default time.Now.
	Clock func() time.Time
	// Logger receives the channel's logs; default slog.Default().
	Logger *slog.Logger
	// Timeout bounds each Slack call of a click's reply; default DefaultTimeout.
	Timeout time.Duration
	// ConsoleLink mints a one-time console sign-in link for an approver,
	// landing on request requestID (the server wraps web.MintLink). With it,
	// pending messages carry a Review in console button; nil: no button.
	ConsoleLink func(ctx context.Context, approver, requestID, slackUser string) (url string, expires time.Time, err error)
}

// Channel is the Slack channel of one approvals service.
type Channel struct {
	svc     *approvals.Service
	api     *slackapi.Client
	channel string
	secret  string
	now     func() time.Time
	log     *slog.Logger
	timeout time.Duration
	bySlack map[string]approvals.Approver
	console func(ctx context.Context, approver, requestID, slackUser string) (string, time.Time, error)

	rejected rejectLog // WARN lines for refused Slack requests, rate-limited
}

var (
	_ approvals.Channel     = (*Channel)(nil)
	_ approvals.Alerter     = (*Channel)(nil)
	_ approvals.Housekeeper = (*Channel)(nil)
)

// New returns the Slack channel of svc. Attach it with svc.AddChannel when
// Posts reports true, so requests are posted; serve Handler (or
// RunSocketMode) for the clicks either way.
func New(svc *approvals.Service, c Config) *Channel {
	ch := &Channel{svc: svc, api: c.Client, channel: c.Channel, secret: c.SigningSecret,
		now: c.Clock, log: c.Logger, timeout: c.Timeout, bySlack: map[string]approvals.Approver{}, console: c.ConsoleLink}
	if ch.now == nil {
		ch.now = time.Now
	}
	if ch.log == nil {
		ch.log = slog.Default()
	}
	ch.log = ch.log.With(slog.String("component", "approvals/slack"))
	if ch.timeout <= 0 {
		ch.timeout = DefaultTimeout
	}
	for _, a := range svc.Approvers() {
		if a.SlackUserID != "" {
			ch.bySlack[a.SlackUserID] = a
		}
	}
	return ch
}

// Posts reports whether the channel can post requests (a client and a channel).
func (c *Channel) Posts() bool { return c.api != nil && c.channel != "" }

// Name implements approvals.Channel.
func (c *Channel) Name() string { return Name }

// approver maps a Slack user to the approver name the core knows ("" = none).
func (c *Channel) approver(user string) string {
	return c.bySlack[user].Name
}

var errNoChannel = errors.New("no Slack channel configured (set TOLLGATE_SLACK_CHANNEL)")

// MessageRef names a posted Slack message.
type MessageRef struct{ Channel, TS string }

// String is the reference the approvals core stores: "CHANNEL TS".
func (m MessageRef) String() string { return m.Channel + " " + m.TS }

// ParseRef reads a reference stored by the core.
func ParseRef(ref string) (MessageRef, error) {
	ch, ts, ok := strings.Cut(ref, " ")
	if !ok || ch == "" || ts == "" {
		return MessageRef{}, fmt.Errorf("slack message reference %q is not \"CHANNEL TS\"", ref)
	}
	return MessageRef{Channel: ch, TS: ts}, nil
}

// rateLimited carries Slack's Retry-After to the core's backoff.
type rateLimited struct{ err *slackapi.RateLimitedError }

func (e rateLimited) Error() string             { return e.err.Error() }
func (e rateLimited) Unwrap() error             { return e.err }
func (e rateLimited) RetryAfter() time.Duration { return e.err.RetryAfter }

func wrapAPI(what string, err error) error {
	var rl *slackapi.RateLimitedError
	if errors.As(err, &rl) {
		return fmt.Errorf("%s: %w", what, rateLimited{rl})
	}
	return fmt.Errorf("%s: %w", what, err)
}

// Post implements Channel: it sends the approval message for r.
// The notification text is plain (escaped, mrkdwn off); the blocks render
// what may be untrusted only as plain_text or code.
func (c *Channel) Post(ctx context.Context, r approvals.Request) (string, error) {
	if c.api == nil || c.channel == "" {
		return "", fmt.Errorf("post approval %s: %w", r.ID, errNoChannel)
	}
	ch, ts, err := c.api.PostMessageContext(ctx, c.channel,
		slackapi.MsgOptionText(FallbackText(r), true), slackapi.MsgOptionDisableMarkdown(),
		slackapi.MsgOptionBlocks(c.blocks(ctx, r)...),
		slackapi.MsgOptionDisableLinkUnfurl())
	if err != nil {
		return "", wrapAPI("post approval "+r.ID, err)
	}
	return MessageRef{Channel: ch, TS: ts}.String(), nil
}

// Update implements Channel: it rebuilds the message for r in place.
func (c *Channel) Update(ctx context.Context, ref string, r approvals.Request) error {
	if c.api == nil {
		return fmt.Errorf("update approval message %s: %w", r.ID, errNoChannel)
	}
	m, err := ParseRef(ref)
	if err != nil {
		return fmt.Errorf("update approval message %s: %w", r.ID, err)
	}
	_, _, _, err = c.api.UpdateMessageContext(ctx, m.Channel, m.TS,
		slackapi.MsgOptionText(FallbackText(r), true), slackapi.MsgOptionDisableMarkdown(),
		slackapi.MsgOptionBlocks(c.blocks(ctx, r)...))
	if err != nil {
		return wrapAPI("update approval message "+r.ID, err)
	}
	return nil
}

// blocks is r's message. Approve + allow N more is offered when the policy
// lets any approver give a mandate like it (the click checks the clicking
// approver again); Review in console when console links are on.
func (c *Channel) blocks(ctx context.Context, r approvals.Request) []slackapi.Block {
	var opts []BlockOption
	if r.State == approvals.StatePending {
		if offer := c.svc.MandateOfferFor(ctx, nil, r); offer.Allowed {
			opts = append(opts, WithMandateOffer(offer.Default))
		}
	}
	if c.console != nil {
		opts = append(opts, WithConsoleButton())
	}
	return RequestBlocks(r, c.now(), opts...)
}

// ephemeral shows text to user only. text is mrkdwn built by this package,
// with every value from elsewhere already rendered by package display.
func (c *Channel) ephemeral(ctx context.Context, channel, user, text string) error {
	if channel == "" {
		channel = c.channel
	}
	if _, err := c.api.PostEphemeralContext(ctx, channel, user, slackapi.MsgOptionText(text, false)); err != nil {
		return fmt.Errorf("ephemeral reply: %w", err)
	}
	return nil
}

// openDenyModal opens the deny-reason modal for the click's trigger id.
func (c *Channel) openDenyModal(ctx context.Context, triggerID string, r approvals.Request) error {
	if c.api == nil {
		return errNoChannel
	}
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	if _, err := c.api.OpenViewContext(ctx, triggerID, DenyModal(r)); err != nil {
		return fmt.Errorf("open deny modal for %s: %w", r.ID, err)
	}
	return nil
}

// Alert implements Alerter: a plain message to the channel,
// sanitised to one line by display.Text, &, < and > escaped, and mrkdwn off,
// so names in it cannot format, mention or link.
func (c *Channel) Alert(ctx context.Context, text string) error {
	if c.api == nil || c.channel == "" {
		return fmt.Errorf("alert: %w", errNoChannel)
	}
	if _, _, err := c.api.PostMessageContext(ctx, c.channel, slackapi.MsgOptionText(display.Text(text, maxMessageText), true), slackapi.MsgOptionDisableMarkdown()); err != nil {
		return fmt.Errorf("alert: %w", err)
	}
	return nil
}
