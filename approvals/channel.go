package approvals

import (
	"context"
	"time"
)

// Channel is a place outside tollgate where requests are presented to
// approvers and kept up to date: a Slack channel. The core decides; a channel
// only shows. Post and Update are retried with backoff by Run until they
// succeed, so what a channel shows always ends on the request's latest state.
// Channels that only read (the web console) need not implement it.
type Channel interface {
	// Name is the channel's key in the database ("slack"); it must not change
	// between releases, or requests would be posted again.
	Name() string
	// Post presents a pending request and returns a reference to what it
	// posted (opaque to the core; Update gets it back).
	Post(ctx context.Context, r Request) (ref string, err error)
	// Update rebuilds what was posted from the request's current state.
	Update(ctx context.Context, ref string, r Request) error
}

// Alerter is a Channel that also takes plain alerts (budget blocks, freezes).
type Alerter interface {
	Alert(ctx context.Context, text string) error
}

// Housekeeper is a Channel with periodic work of its own (pruning a replay
// cache, rolling up log lines); Run calls it every ExpiryInterval.
type Housekeeper interface {
	Housekeep(ctx context.Context)
}

// RetryAfterError is an error of a Channel's Post or Update that says when the
// other side wants to be asked again (a rate limit). Run waits at least that long.
type RetryAfterError interface {
	error
	RetryAfter() time.Duration
}

// AddChannel attaches a channel that presents requests: from now on every
// pending request, and every change to one, is posted or updated there (Run
// retries what fails). Call it before Run, once per channel name.
func (s *Service) AddChannel(c Channel) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.channels = append(s.channels, c)
}

func (s *Service) channelList() []Channel {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Channel(nil), s.channels...)
}
