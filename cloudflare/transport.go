package cloudflare

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"time"

	"github.com/cloudflare/cloudflare-go/v6/option"
)

// Constant slog keys.
const (
	logPurpose   = "purpose"
	logLabel     = "label"
	logTokenID   = "token_id"
	logMethod    = "method"
	logPath      = "path"
	logStatus    = "status"
	logCFRay     = "cf_ray"
	logDuration  = "duration"
	logErr       = "err"
	logExpires   = "expires_at"
	logGroups    = "permission_groups"
	logAttempt   = "attempt"
	logWait      = "wait"
	logDomain    = "domain"
	logScript    = "script"
	logState     = "state"
	logCount     = "count"
	logSource    = "source"
	logZones     = "zones"
	logScheduled = "scheduled"
)

// clientOptions builds the cloudflare-go options of one client: one token,
// no built-in retries (every retry is this package's explicit decision) and
// the middleware that records every request. revoking marks the clients
// that delete tokens (see recorder).
func (b *Broker) clientOptions(token string, p Purpose, label, tokenID string, revoking bool) []option.RequestOption {
	return []option.RequestOption{
		option.WithBaseURL(b.cfg.APIBase),
		option.WithAPIToken(token),
		option.WithHTTPClient(b.cfg.HTTPClient),
		option.WithMaxRetries(0),
		option.WithRequestTimeout(b.cfg.RequestTimeout),
		option.WithMiddleware(b.recorder(p, label, tokenID, revoking)),
	}
}

// recorder is the middleware that logs each request, hands it to the
// Observer and fills the call's callInfo. It sees the request after
// cloudflare-go built it, so it must never log headers.
//
// An Observer error fails the call, except on revoking clients: failing
// closed means refusing to act, and deleting a token is the opposite of
// acting, so an audit outage must not keep a credential alive. There the
// error is logged at error level and the deletion goes on.
func (b *Broker) recorder(p Purpose, label, tokenID string, revoking bool) option.Middleware {
	class := classEssential
	if p == PurposeQuote && !revoking {
		class = classDeferrable
	}
	budgetKey := tokenID
	if budgetKey == "" {
		budgetKey = "parent"
	}
	return func(req *http.Request, next option.MiddlewareNext) (*http.Response, error) {
		if err := b.budget.admit(class, budgetKey); err != nil {
			return nil, err // never sent: nothing to record
		}
		start := time.Now()
		res, err := next(req)
		b.budget.observe(res)
		rec := RequestRecord{
			Purpose: p, Label: label, TokenID: tokenID,
			Method: req.Method, Path: req.URL.Path, Duration: time.Since(start),
		}
		if res != nil {
			rec.Status = res.StatusCode
			rec.CFRay = res.Header.Get("cf-ray")
		}
		if err != nil {
			rec.Err = err.Error()
		}
		ctx := req.Context()
		if ci, ok := ctx.Value(callKey{}).(*callInfo); ok && res != nil {
			ci.status, ci.cfRay, ci.retryAfter = res.StatusCode, rec.CFRay, res.Header.Get("Retry-After")
		}
		b.log.LogAttrs(ctx, slog.LevelDebug, "cloudflare request",
			slog.String(logPurpose, string(p)), slog.String(logLabel, label), slog.String(logTokenID, tokenID),
			slog.String(logMethod, rec.Method), slog.String(logPath, rec.Path), slog.Int(logStatus, rec.Status),
			slog.String(logCFRay, rec.CFRay), slog.Duration(logDuration, rec.Duration), slog.String(logErr, rec.Err))
		if b.cfg.Observer != nil {
			if oerr := b.cfg.Observer(ctx, rec); oerr != nil {
				if revoking {
					b.log.LogAttrs(ctx, slog.LevelError, "request observer failed on a token revocation request; revoking anyway",
						slog.String(logTokenID, tokenID), slog.String(logMethod, rec.Method), slog.String(logPath, rec.Path), slog.String(logErr, oerr.Error()))
					return res, err
				}
				if res != nil && res.Body != nil {
					_ = res.Body.Close()
				}
				return nil, fmt.Errorf("%w: %w", ErrObserver, oerr)
			}
		}
		return res, err
	}
}

// read runs a read with the configured retries: 429, 5xx and transport
// failures are retried with doubling backoff (or the server's Retry-After),
// everything else returns at once. Reads have no side effect, so a retry
// can never double anything.
func (b *Broker) read(ctx context.Context, fn func(ctx context.Context) error) error {
	return b.attempt(ctx, b.cfg.ReadRetries, retryable, fn)
}

// mutate runs a mutating request once, retrying only a 429 (refused before
// acting). A 5xx or transport failure is never retried: the request may
// have acted, and a second POST could act twice.
func (b *Broker) mutate(ctx context.Context, fn func(ctx context.Context) error) error {
	return b.attempt(ctx, b.cfg.ReadRetries, rateLimited, fn)
}

// mutateOnce runs a mutating request exactly once (registrations: billable).
func (b *Broker) mutateOnce(ctx context.Context, fn func(ctx context.Context) error) error {
	return b.attempt(ctx, 0, nil, fn)
}

func (b *Broker) attempt(ctx context.Context, retries int, again func(error) bool, fn func(ctx context.Context) error) error {
	wait := b.cfg.RetryBackoff
	for n := 0; ; n++ {
		cctx, ci := withCall(ctx)
		err := mapError(fn(cctx), ci)
		if err == nil {
			return nil
		}
		if n >= retries || again == nil || !again(err) || ctx.Err() != nil {
			return err
		}
		d := wait
		if ra, perr := strconv.Atoi(ci.retryAfter); perr == nil && time.Duration(ra)*time.Second > d {
			d = time.Duration(ra) * time.Second
		}
		d = min(d, b.cfg.MaxRetryWait)
		b.log.LogAttrs(ctx, slog.LevelDebug, "retrying cloudflare request",
			slog.Int(logAttempt, n+1), slog.Duration(logWait, d), slog.String(logErr, err.Error()))
		if err := sleep(ctx, d); err != nil {
			return err
		}
		wait *= 2
	}
}

// sleep waits d or until ctx is done.
func sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
