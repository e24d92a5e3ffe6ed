package approvals

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/slack-go/slack"

	"github.com/tollgatehq/tollgate/approvals/display"
)

// MessageRef names a posted Slack message.
type MessageRef struct{ Channel, TS string }

// Notifier is the Slack side of the service. SlackNotifier is the real one;
// a nil Notifier in Options means no Slack at all (the CLI approver only).
type Notifier interface {
	// Post sends the approval message for a pending request.
	Post(ctx context.Context, r Request) (MessageRef, error)
	// Update rebuilds the message in place from the request's current state.
	Update(ctx context.Context, ref MessageRef, r Request) error
	// Ephemeral shows text to one user in a channel.
	Ephemeral(ctx context.Context, channel, user, text string) error
	// OpenDenyModal opens the modal asking for a deny reason.
	OpenDenyModal(ctx context.Context, triggerID string, r Request) error
	// Alert posts a plain message to the approvals channel.
	Alert(ctx context.Context, text string) error
}

var _ Notifier = (*SlackNotifier)(nil)

// SlackNotifier posts Block Kit messages with slack-go's Web API client.
type SlackNotifier struct {
	api     *slack.Client
	channel string
	now     func() time.Time
}

// NotifierOption configures a SlackNotifier.
type NotifierOption func(*SlackNotifier)

// WithNotifierClock sets the clock used for relative times ("in 29m") on messages.
func WithNotifierClock(now func() time.Time) NotifierOption {
	return func(n *SlackNotifier) {
		if now != nil {
			n.now = now
		}
	}
}

// NewSlackNotifier returns a Notifier posting to channel (an id like C0123 or a
// name) through client, built with slack.New(botToken, slack.OptionAPIURL(…)).
func NewSlackNotifier(client *slack.Client, channel string, opts ...NotifierOption) *SlackNotifier {
	n := &SlackNotifier{api: client, channel: channel, now: time.Now}
	for _, o := range opts {
		o(n)
	}
	return n
}

var errNoChannel = errors.New("no Slack channel configured (set TOLLGATE_SLACK_CHANNEL)")

// Post sends the approval message for r to the channel. The notification
// text is plain (escaped, mrkdwn off); the blocks render what may be untrusted
// only as plain_text or code.
func (n *SlackNotifier) Post(ctx context.Context, r Request) (MessageRef, error) {
	if n.channel == "" {
		return MessageRef{}, fmt.Errorf("post approval %s: %w", r.ID, errNoChannel)
	}
	ch, ts, err := n.api.PostMessageContext(ctx, n.channel,
		slack.MsgOptionText(FallbackText(r), true), slack.MsgOptionDisableMarkdown(),
		slack.MsgOptionBlocks(RequestBlocks(r, n.now())...),
		slack.MsgOptionDisableLinkUnfurl())
	if err != nil {
		return MessageRef{}, fmt.Errorf("post approval %s: %w", r.ID, err)
	}
	return MessageRef{Channel: ch, TS: ts}, nil
}

// Update rebuilds the message for r in place.
func (n *SlackNotifier) Update(ctx context.Context, ref MessageRef, r Request) error {
	_, _, _, err := n.api.UpdateMessageContext(ctx, ref.Channel, ref.TS,
		slack.MsgOptionText(FallbackText(r), true), slack.MsgOptionDisableMarkdown(),
		slack.MsgOptionBlocks(RequestBlocks(r, n.now())...))
	if err != nil {
		return fmt.Errorf("update approval message %s: %w", r.ID, err)
	}
	return nil
}

// Ephemeral shows text to user only. text is mrkdwn built by this package,
// with every value from elsewhere already rendered by package display.
func (n *SlackNotifier) Ephemeral(ctx context.Context, channel, user, text string) error {
	if channel == "" {
		channel = n.channel
	}
	if _, err := n.api.PostEphemeralContext(ctx, channel, user, slack.MsgOptionText(text, false)); err != nil {
		return fmt.Errorf("ephemeral reply: %w", err)
	}
	return nil
}

// OpenDenyModal opens the deny-reason modal for the click's trigger id.
func (n *SlackNotifier) OpenDenyModal(ctx context.Context, triggerID string, r Request) error {
	if _, err := n.api.OpenViewContext(ctx, triggerID, DenyModal(r)); err != nil {
		return fmt.Errorf("open deny modal for %s: %w", r.ID, err)
	}
	return nil
}

// Alert posts a plain message to the channel: sanitised to one line by
// display.Text, &, < and > escaped, and mrkdwn off, so names in it cannot
// format, mention or link.
func (n *SlackNotifier) Alert(ctx context.Context, text string) error {
	if n.channel == "" {
		return fmt.Errorf("alert: %w", errNoChannel)
	}
	if _, _, err := n.api.PostMessageContext(ctx, n.channel, slack.MsgOptionText(display.Text(text, maxMessageText), true), slack.MsgOptionDisableMarkdown()); err != nil {
		return fmt.Errorf("alert: %w", err)
	}
	return nil
}
