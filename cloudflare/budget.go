package cloudflare

import (
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Cloudflare's documented account limits.
const (
	// DefaultRateLimit requests per DefaultRateWindow: Cloudflare's API
	// limit. Exceeding it blocks every call for five minutes, the platform
	// team's own included.
	DefaultRateLimit  = 1200
	DefaultRateWindow = 5 * time.Minute
	// DefaultTokenCap is how many API tokens one account may hold.
	DefaultTokenCap = 500
	// tokenCapMargin is how far below the cap new tokens are refused: room
	// for the platform team's own.
	tokenCapMargin = 10
)

// LimitError refuses a request before it is sent, to keep tollgate inside a
// Cloudflare account limit: the API rate limit (price checks are refused
// first, leaving headroom for executions and token revocations) or the
// account's token cap. Nothing was sent.
type LimitError struct {
	// Limit is "rate" or "tokens".
	Limit string
	// Message says what is exhausted and what to do.
	Message string
	// RetryAfter is when trying again can succeed; 0 when waiting alone
	// will not help (the token cap).
	RetryAfter time.Duration
}

// Error is the message with its retry-after, in whole seconds.
func (e *LimitError) Error() string {
	if e.RetryAfter > 0 {
		return fmt.Sprintf("%s; retry after %ds", e.Message, int(e.RetryAfter.Round(time.Second)/time.Second))
	}
	return e.Message
}

// requestClass is what a request is for, for the rate budget.
type requestClass int

const (
	// classDeferrable requests (price checks and minting their token) wait
	// when the budget runs low.
	classDeferrable requestClass = iota
	// classEssential requests (executions, reconciliation, token mints for
	// them and every revocation) use the headroom.
	classEssential
)

// rateBudget counts every request tollgate sends to Cloudflare in a sliding
// window, and what Cloudflare's Ratelimit / Ratelimit-Policy headers say,
// and refuses a request that would come too close to the limit: deferrable
// ones once no more than the headroom is left, essential ones at the limit. Cloudflare documents the limit per user and per token;
// the budget counts all of tollgate's requests together, which keeps inside
// it under either reading, and keeps a count per token as well.
type rateBudget struct {
	clock func() time.Time
	log   *slog.Logger

	mu       sync.Mutex
	limit    int
	window   time.Duration
	headroom float64   // share of the limit kept for essential requests
	sent     []sentReq // within the window, oldest first
	perToken map[string]int
	// What the last answer's Ratelimit header said: remaining requests at
	// hdrAt, and when the window resets.
	hdrRemaining int
	hdrAt        time.Time
	hdrReset     time.Time
	sinceHdr     int       // requests sent since hdrAt
	lockedUntil  time.Time // after a 429: Cloudflare refuses everything
	refused      int       // requests refused so far
}

type sentReq struct {
	at    time.Time
	token string
}

func newRateBudget(limit int, window time.Duration, headroom float64, clock func() time.Time, log *slog.Logger) *rateBudget {
	return &rateBudget{clock: clock, log: log, limit: limit, window: window, headroom: headroom, perToken: map[string]int{}}
}

// pruneLocked drops requests older than the window. Callers hold mu.
func (rb *rateBudget) pruneLocked(now time.Time) {
	i := 0
	for i < len(rb.sent) && now.Sub(rb.sent[i].at) >= rb.window {
		if n := rb.perToken[rb.sent[i].token] - 1; n > 0 {
			rb.perToken[rb.sent[i].token] = n
		} else {
			delete(rb.perToken, rb.sent[i].token)
		}
		i++
	}
	rb.sent = rb.sent[i:]
}

// remainingLocked is what is left of the limit right now, by the local
// count and by the last Ratelimit header, whichever is lower, and how long
// until more than keep is left. Callers hold mu.
func (rb *rateBudget) remainingLocked(now time.Time, keep int) (left int, wait time.Duration) {
	left = rb.limit - len(rb.sent)
	if k := len(rb.sent) - (rb.limit - keep); k >= 0 && k < len(rb.sent) {
		wait = rb.sent[k].at.Add(rb.window).Sub(now)
	}
	if !rb.hdrAt.IsZero() && now.Before(rb.hdrReset) {
		if h := rb.hdrRemaining - rb.sinceHdr; h < left {
			left = h
			wait = max(wait, rb.hdrReset.Sub(now))
		}
	}
	return left, max(wait, time.Second)
}

// admit reserves one request of class c made with tokenID, or refuses it.
func (rb *rateBudget) admit(c requestClass, tokenID string) error {
	now := rb.clock()
	rb.mu.Lock()
	defer rb.mu.Unlock()
	rb.pruneLocked(now)
	keep := 0 // essential requests may use the budget up to the limit, never past it
	what := "requests"
	if c == classDeferrable {
		keep = max(int(float64(rb.limit)*rb.headroom), 1)
		what = "price checks"
		if now.Before(rb.lockedUntil) {
			rb.refused++
			return &LimitError{Limit: "rate", RetryAfter: rb.lockedUntil.Sub(now), Message: fmt.Sprintf(
				"Cloudflare is rate-limiting this account (it answered 429); tollgate pauses %s until it lets requests through again", what)}
		}
	}
	left, wait := rb.remainingLocked(now, keep)
	if left <= keep {
		rb.refused++
		msg := fmt.Sprintf("Cloudflare API budget: %d of %d requests per %s are left; tollgate pauses %s to keep room for purchases, deploys and token revocations",
			max(left, 0), rb.limit, rb.window, what)
		if c == classEssential {
			msg = fmt.Sprintf("Cloudflare API budget: the account is at its limit of %d requests per %s; tollgate sends no more until the window moves on, rather than have Cloudflare block every call for five minutes",
				rb.limit, rb.window)
		}
		return &LimitError{Limit: "rate", Message: msg, RetryAfter: wait}
	}
	rb.sent = append(rb.sent, sentReq{at: now, token: tokenID})
	rb.perToken[tokenID]++
	rb.sinceHdr++
	return nil
}

// observe reads Cloudflare's rate-limit headers and a 429's Retry-After.
func (rb *rateBudget) observe(res *http.Response) {
	if res == nil {
		return
	}
	now := rb.clock()
	rb.mu.Lock()
	defer rb.mu.Unlock()
	if q, w, ok := parseRateItems(res.Header.Get("Ratelimit-Policy"), "q", "w"); ok && q > 0 && w > 0 {
		if q != rb.limit || time.Duration(w)*time.Second != rb.window {
			rb.log.Info("cloudflare reports its API rate limit", "limit", q, "window", time.Duration(w)*time.Second)
		}
		rb.limit, rb.window = q, time.Duration(w)*time.Second
	}
	if r, t, ok := parseRateItems(res.Header.Get("Ratelimit"), "r", "t"); ok {
		rb.hdrRemaining, rb.hdrAt, rb.hdrReset, rb.sinceHdr = r, now, now.Add(time.Duration(t)*time.Second), 0
	}
	// A 429 with Retry-After is Cloudflare's rate limit (the five-minute
	// block); one without is some other throttle, retried as usual.
	if s, err := strconv.Atoi(strings.TrimSpace(res.Header.Get("Retry-After"))); err == nil && s > 0 && res.StatusCode == http.StatusTooManyRequests {
		wait := time.Duration(s) * time.Second
		rb.lockedUntil = now.Add(wait)
		rb.log.Warn("cloudflare answered 429: the account's API rate limit is exhausted; price checks pause", "retry_after", wait)
	}
}

// usage is the budget's state: requests in the window, the limit and its
// window, requests per token in the window, and how many were refused.
func (rb *rateBudget) usage() (used, limit int, window time.Duration, perToken map[string]int, refused int) {
	now := rb.clock()
	rb.mu.Lock()
	defer rb.mu.Unlock()
	rb.pruneLocked(now)
	pt := make(map[string]int, len(rb.perToken))
	for k, v := range rb.perToken {
		pt[k] = v
	}
	return len(rb.sent), rb.limit, rb.window, pt, rb.refused
}

// parseRateItems reads a structured-field list such as
// `"default";r=50;t=30, "burst";r=9;t=2` and returns the two named integer
// parameters of the item with the lowest first parameter (the tightest
// limit). ok is false when no item has both.
func parseRateItems(h, first, second string) (a, b int, ok bool) {
	for item := range strings.SplitSeq(h, ",") {
		var x, y int
		var hasX, hasY bool
		params := strings.Split(item, ";")
		for _, p := range params[1:] {
			k, v, found := strings.Cut(strings.TrimSpace(p), "=")
			if !found {
				continue
			}
			n, err := strconv.Atoi(strings.TrimSpace(v))
			if err != nil || n < 0 {
				continue
			}
			switch k {
			case first:
				x, hasX = n, true
			case second:
				y, hasY = n, true
			}
		}
		if hasX && hasY && (!ok || x < a) {
			a, b, ok = x, y, true
		}
	}
	return a, b, ok
}

// tokenRoom refuses a new token when the account is near its token cap.
func (b *Broker) tokenRoom() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	n, limit := b.accountTokens, b.cfg.TokenCap
	if n < 0 || n < limit-tokenCapMargin {
		return nil
	}
	return &LimitError{Limit: "tokens", Message: fmt.Sprintf(
		"the Cloudflare account holds %d of its %d API tokens; tollgate mints no more until some are deleted (tollgate deletes its own leftovers on start; look for others in the dashboard under Account API Tokens)", n, limit)}
}

// countTokens sets the account's token count from a full listing.
func (b *Broker) countTokens(n int) {
	b.mu.Lock()
	b.accountTokens = n
	b.mu.Unlock()
	b.warnNearCap()
}

func (b *Broker) tokenMinted(id string) {
	b.mu.Lock()
	b.live[id] = true
	if b.accountTokens >= 0 {
		b.accountTokens++
	}
	b.mu.Unlock()
	b.warnNearCap()
}

// tokenDeleted forgets a deleted token and takes it off the count: one
// that existed, or one this Broker minted (and so counted) that someone
// else deleted first.
func (b *Broker) tokenDeleted(id string, existed bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.live[id] || existed {
		if b.accountTokens > 0 {
			b.accountTokens--
		}
	}
	delete(b.live, id)
	if b.accountTokens < b.cfg.TokenCap*9/10 {
		b.capWarned = false
	}
}

// warnNearCap logs once each time the count crosses 90 % of the cap.
func (b *Broker) warnNearCap() {
	b.mu.Lock()
	n, limit := b.accountTokens, b.cfg.TokenCap
	warn := n >= limit*9/10 && !b.capWarned
	if warn {
		b.capWarned = true
	}
	b.mu.Unlock()
	if warn {
		b.log.Warn("the Cloudflare account is close to its API token cap; new tokens are refused ten below it", "tokens", n, "cap", limit)
	}
}

// Usage is a Broker's standing against the account's limits.
type Usage struct {
	// Requests is how many requests tollgate sent in the last RateWindow,
	// against RateLimit (as configured, or as Cloudflare last reported).
	Requests, RateLimit int
	RateWindow          time.Duration
	// PerToken is Requests by token id ("parent" for the parent token).
	PerToken map[string]int
	// Refused counts requests the budget refused so far.
	Refused int
	// AccountTokens is the account's token count (-1 until the first
	// Sweep); TokenCap its cap.
	AccountTokens, TokenCap int
}

// Usage reports the request budget and the account's token count.
func (b *Broker) Usage() Usage {
	var u Usage
	u.Requests, u.RateLimit, u.RateWindow, u.PerToken, u.Refused = b.budget.usage()
	b.mu.Lock()
	u.AccountTokens, u.TokenCap = b.accountTokens, b.cfg.TokenCap
	b.mu.Unlock()
	return u
}
