package sandbox

import (
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"time"
)

// RateLimit emulates Cloudflare's API rate limit for the whole account:
// every authenticated answer carries Ratelimit and Ratelimit-Policy headers,
// and the request that exceeds the limit, and every request after it for
// Lockout, is answered 429 (code 971) with Retry-After — the five-minute
// block that stops the platform team's own calls too. Zero fields take
// Cloudflare's values.
type RateLimit struct {
	// Requests per Window; default 1,200 per 5 minutes.
	Requests int
	Window   time.Duration
	// Lockout is how long every request is refused once the limit was
	// exceeded; default 5 minutes.
	Lockout time.Duration
	// Off answers without headers and never limits.
	Off bool
}

func (rl RateLimit) withDefaults() RateLimit {
	if rl.Requests == 0 {
		rl.Requests = 1200
	}
	if rl.Window == 0 {
		rl.Window = 5 * time.Minute
	}
	if rl.Lockout == 0 {
		rl.Lockout = 5 * time.Minute
	}
	return rl
}

func checkRateLimit(rl RateLimit) error {
	if rl.Requests < 0 || rl.Window < 0 || rl.Lockout < 0 {
		return fmt.Errorf("sandbox rate limit %+v: values must not be negative", rl)
	}
	return nil
}

// limiter counts the account's requests in a sliding window.
type limiter struct {
	mu          sync.Mutex
	cfg         RateLimit
	sent        []time.Time
	lockedUntil time.Time
	lockouts    int
}

// admit counts one request at now. It writes the rate-limit headers and,
// when the request is refused, the 429; ok is false then.
func (l *limiter) admit(w http.ResponseWriter, now time.Time) (ok bool) {
	l.mu.Lock()
	cfg := l.cfg
	if cfg.Off {
		l.mu.Unlock()
		return true
	}
	i := 0
	for i < len(l.sent) && now.Sub(l.sent[i]) >= cfg.Window {
		i++
	}
	l.sent = l.sent[i:]
	locked := now.Before(l.lockedUntil)
	if !locked && len(l.sent) >= cfg.Requests {
		l.lockedUntil, locked = now.Add(cfg.Lockout), true
		l.lockouts++
	}
	if !locked {
		l.sent = append(l.sent, now)
	}
	remaining := max(cfg.Requests-len(l.sent), 0)
	reset := cfg.Window
	if len(l.sent) > 0 {
		reset = l.sent[0].Add(cfg.Window).Sub(now)
	}
	retry := l.lockedUntil.Sub(now)
	l.mu.Unlock()

	h := w.Header()
	h.Set("Ratelimit-Policy", fmt.Sprintf(`"default";q=%d;w=%d`, cfg.Requests, int(cfg.Window/time.Second)))
	if locked {
		secs := int((retry + time.Second - 1) / time.Second)
		h.Set("Ratelimit", fmt.Sprintf(`"default";r=0;t=%d`, secs))
		h.Set("Retry-After", strconv.Itoa(secs))
		writeError(w, http.StatusTooManyRequests, codeRateLimited, msgRateLimited)
		return false
	}
	h.Set("Ratelimit", fmt.Sprintf(`"default";r=%d;t=%d`, remaining, int((reset+time.Second-1)/time.Second)))
	return true
}

// SetRateLimit replaces the rate-limit emulation (requests already counted
// stay counted). It panics on negative values, which is a test bug.
func (s *Sandbox) SetRateLimit(rl RateLimit) {
	if err := checkRateLimit(rl); err != nil {
		panic(err)
	}
	s.limit.mu.Lock()
	s.limit.cfg = rl.withDefaults()
	s.limit.mu.Unlock()
}

// Lockouts is how many times the account exceeded the rate limit and was
// blocked, as Cloudflare would block it.
func (s *Sandbox) Lockouts() int {
	s.limit.mu.Lock()
	defer s.limit.mu.Unlock()
	return s.limit.lockouts
}
