package cloudflare

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/cloudflare/cloudflare-go/v6/registrar"
)

// Sentinel errors; test with errors.Is.
var (
	// ErrNotFound: the registration or Worker does not exist.
	ErrNotFound = errors.New("cloudflare: not found")
	// ErrInDoubt: a mutating request may or may not have taken effect (a
	// transport failure or 5xx after sending it, an interrupted workflow
	// poll, or a registration waiting on a human). Reconcile with
	// GetRegistration / GetWorker before treating it as failed.
	ErrInDoubt = errors.New("cloudflare: outcome unknown, reconcile before retrying")
	// ErrWrongPurpose: the Session's token was not minted for this call; no
	// request was made.
	ErrWrongPurpose = errors.New("cloudflare: session purpose does not allow this call")
	// ErrSessionClosed: Close was called; no request was made.
	ErrSessionClosed = errors.New("cloudflare: session closed")
	// ErrSessionExpired: the Session's token is past its expires_on; no
	// request was made.
	ErrSessionExpired = errors.New("cloudflare: session token expired")
	// ErrObserver: the Observer refused a request record, so the call failed
	// closed even if Cloudflare answered.
	ErrObserver = errors.New("cloudflare: request observer failed")
)

// APIError is an error answer from Cloudflare, reduced to what is safe to
// show: never the request (which carries the token).
type APIError struct {
	Status  int    // HTTP status
	Code    int    // first Cloudflare error code, 0 if none
	Message string // Cloudflare's error messages, joined
	CFRay   string // Cloudflare's request id, for support
}

// Error describes the answer: status, Cloudflare's messages, code and cf-ray.
func (e *APIError) Error() string {
	msg := e.Message
	if msg == "" {
		msg = http.StatusText(e.Status)
	}
	s := fmt.Sprintf("cloudflare API answered %d: %s", e.Status, msg)
	if e.Code != 0 {
		s += fmt.Sprintf(" (code %d)", e.Code)
	}
	if e.CFRay != "" {
		s += " [cf-ray " + e.CFRay + "]"
	}
	return s
}

// Is makes errors.Is(err, ErrNotFound) true for 404 answers.
func (e *APIError) Is(target error) bool {
	return target == ErrNotFound && e.Status == http.StatusNotFound
}

// WorkflowError is a registration workflow that ended without success:
// state "failed" (terminal; Code and Message come from the registrar) or
// "action_required" (waiting for a human at Cloudflare; in doubt).
type WorkflowError struct {
	Domain  string
	State   string
	Code    string
	Message string
}

// Error names the domain, the state the workflow stopped in and why.
func (e *WorkflowError) Error() string {
	s := fmt.Sprintf("registration of %s ended in state %s", e.Domain, e.State)
	if e.Code != "" || e.Message != "" {
		s += fmt.Sprintf(": %s %s", e.Code, e.Message)
	}
	return strings.TrimSpace(s)
}

// Is makes a non-terminal workflow count as ErrInDoubt: the registration may
// still complete once someone acts on it.
func (e *WorkflowError) Is(target error) bool {
	return target == ErrInDoubt && e.State != "failed"
}

// callInfo is filled by the request middleware, so an error whose body
// cloudflare-go could not parse still reports its status.
type callInfo struct {
	status     int
	cfRay      string
	retryAfter string
}

type callKey struct{}

func withCall(ctx context.Context) (context.Context, *callInfo) {
	ci := &callInfo{}
	return context.WithValue(ctx, callKey{}, ci), ci
}

// mapError turns a cloudflare-go error into one that is safe to return:
// cloudflare-go's *Error holds the *http.Request with the Authorization
// header, so it is converted to an APIError and never wrapped.
func mapError(err error, ci *callInfo) error {
	if err == nil {
		return nil
	}
	var ae *registrar.Error // the same type as workers.Error and accounts.Error
	if errors.As(err, &ae) {
		out := &APIError{Status: ae.StatusCode}
		var msgs []string
		for _, d := range ae.Errors {
			if out.Code == 0 {
				out.Code = int(d.Code)
			}
			if d.Message != "" {
				msgs = append(msgs, d.Message)
			}
		}
		out.Message = strings.Join(msgs, "; ")
		if ae.Response != nil {
			out.CFRay = ae.Response.Header.Get("cf-ray")
		}
		return out
	}
	var le *LimitError
	if errors.Is(err, ErrObserver) || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) || errors.As(err, &le) {
		return err
	}
	if ci != nil && ci.status >= 400 {
		// An error answer whose body was not Cloudflare's JSON (e.g. a proxy's
		// HTML page); cloudflare-go's own error only says the JSON was bad.
		return &APIError{Status: ci.status, Message: "error answer without a Cloudflare JSON body", CFRay: ci.cfRay}
	}
	return err
}

// retryable reports whether a mapped error may be retried for a read:
// rate limits, server errors and transport failures (a per-attempt timeout
// included), but not a cancellation and not an audit failure. The retry
// loop stops on its own once the caller's context is done.
func retryable(err error) bool {
	var le *LimitError
	if err == nil || errors.Is(err, ErrObserver) || errors.Is(err, context.Canceled) || errors.As(err, &le) {
		return false
	}
	var ae *APIError
	if errors.As(err, &ae) {
		return ae.Status == http.StatusTooManyRequests || ae.Status >= 500
	}
	return true
}

// ambiguous reports whether a failed mutating request may nevertheless have
// acted: anything but a clean 4xx answer.
func ambiguous(err error) bool {
	var ae *APIError
	if errors.As(err, &ae) {
		return ae.Status >= 500
	}
	var le *LimitError
	return err != nil && !errors.As(err, &le) // a refused request was never sent
}

// rateLimited reports a 429, the one answer that proves a mutating request
// was refused before it acted and so may be sent again.
func rateLimited(err error) bool {
	var ae *APIError
	return errors.As(err, &ae) && ae.Status == http.StatusTooManyRequests
}
