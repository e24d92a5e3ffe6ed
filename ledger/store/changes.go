package store

import (
	"log/slog"
	"time"
)

// Subscribe returns a channel that receives (coalesced, never blocking the
// sender) soon after any write transaction on the database commits, in this
// process or any other, and a func that ends the subscription. The first
// subscriber starts the backend's watch, which runs until Close. A waiter
// re-reads what it waits for on each receive: a receive says something
// changed, not what.
func (s *Store) Subscribe() (<-chan struct{}, func()) {
	ch := make(chan struct{}, 1)
	s.subsMu.Lock()
	if s.subs == nil {
		s.subs = map[chan struct{}]struct{}{}
	}
	s.subs[ch] = struct{}{}
	start := !s.watching
	s.watching = true
	s.subsMu.Unlock()
	if start {
		go s.watch()
	}
	return ch, func() {
		s.subsMu.Lock()
		delete(s.subs, ch)
		s.subsMu.Unlock()
	}
}

func (s *Store) watch() {
	for s.life.Err() == nil {
		if err := s.b.Watch(s.life, s.broadcast); err != nil && s.life.Err() == nil {
			s.log.Warn("watching the database for changes failed; retrying", slog.String("error", err.Error()))
			// Something may have changed while the watch was down.
			s.broadcast()
			select {
			case <-s.life.Done():
			case <-time.After(time.Second):
			}
		}
	}
}

func (s *Store) broadcast() {
	s.gen.Add(1) // see Generation
	s.subsMu.Lock()
	defer s.subsMu.Unlock()
	for ch := range s.subs {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}

// Changed wakes every subscriber of this process at once, for a change it
// made itself and wants seen without waiting for the watch.
func (s *Store) Changed() { s.broadcast() }
