package cloudflare

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"time"
)

// DefaultAPIBase is Cloudflare's v4 API.
const DefaultAPIBase = "https://api.cloudflare.com/client/v4/"

// Token lifetime bounds. A minted token lives long enough for one operation
// including a registrar workflow, and no longer.
const (
	DefaultTokenTTL = 5 * time.Minute
	MinTokenTTL     = time.Minute
	MaxTokenTTL     = 15 * time.Minute
)

// Config configures a Broker. The zero value of every optional field picks
// the documented default.
type Config struct {
	// APIBase is the v4 API base URL. Default DefaultAPIBase; the sandbox
	// serves at http://ADDR/client/v4/.
	APIBase string
	// AccountID is the 32-hex Cloudflare account every token is scoped to.
	AccountID string
	// ParentToken is the one standing credential. It needs only "Account API
	// Tokens Write" (and Read); the Broker uses it for nothing but listing
	// permission groups, creating, listing, verifying and deleting account
	// tokens, and rolling its own value. Secret: never logged, never
	// returned. Set it or ParentSource, not both; a ParentToken cannot be
	// rotated (it has nowhere to be written).
	ParentToken string
	// ParentSource is where the parent token is read from (at start, and
	// again when Cloudflare refuses it because another process sharing the
	// source rotated it) and where a rotated value is written (TokenFile).
	ParentSource ParentSource
	// OnRotation, if set, is told of every rotation attempt of the parent
	// token (never its value), e.g. to audit it; an error is returned by
	// the rotation.
	OnRotation func(ctx context.Context, r Rotation) error
	// TokenTTL is how long a minted token lives (expires_on). Default 5m;
	// allowed 1m to 15m.
	TokenTTL time.Duration
	// RequestIP, if set (an IP address or CIDR range), is written into every
	// minted token as condition.request_ip.in, so a leaked token is useless
	// from anywhere else.
	RequestIP string
	// HTTPClient carries every Cloudflare request. Default: a new
	// http.Client; deadlines come from the caller's context.
	HTTPClient *http.Client
	// Observer, if set, sees every Cloudflare HTTP request and can fail it.
	Observer Observer
	// Logger receives debug lines per request and warnings for token cleanup
	// failures. Default: discard.
	Logger *slog.Logger

	// Clock is now for expires_on and local expiry checks. Default time.Now.
	Clock func() time.Time
	// ReadRetries is how many times a read (GETs and domain-check) is retried
	// after a 429, a 5xx or a transport error. 0 means the default, 2;
	// negative means never.
	ReadRetries int
	// RetryBackoff is the first wait between retries, doubled each time.
	// Default 250ms.
	RetryBackoff time.Duration
	// MaxRetryWait caps any single wait, including a server's Retry-After.
	// Default 5s.
	MaxRetryWait time.Duration
	// PollInterval is the first wait between registration-status polls,
	// doubled up to MaxPollInterval (and tripled while the workflow is
	// blocked). Default 1s.
	PollInterval time.Duration
	// MaxPollInterval caps the poll interval. Default 10s.
	MaxPollInterval time.Duration
	// DeleteAttempts is how many times deleting a minted token is tried
	// before Close reports failure. Default 4.
	DeleteAttempts int
	// CloseTimeout bounds Session.Close, which runs even when the caller's
	// context is already done so a token is never left behind by a timeout.
	// Default 30s.
	CloseTimeout time.Duration
	// RequestTimeout bounds each HTTP attempt, so a hung connection fails
	// even under a context without deadline. It must leave room for a
	// registration, which Cloudflare may hold open while it completes.
	// Default 60s.
	RequestTimeout time.Duration

	// RateLimit is Cloudflare's API request limit per RateWindow, counted
	// over every request tollgate makes. Default DefaultRateLimit per
	// DefaultRateWindow; a Ratelimit-Policy header from Cloudflare replaces
	// both, and its Ratelimit header's remaining count is honoured too.
	RateLimit  int
	RateWindow time.Duration
	// RateHeadroom is the share of the limit kept for executions and token
	// revocations: price checks (and minting their token) are refused with
	// a *LimitError once no more than this share is left. Default 0.2.
	RateHeadroom float64
	// TokenCap is how many API tokens the account may hold; new tokens are
	// refused with a *LimitError ten below it. Default DefaultTokenCap.
	TokenCap int
}

// Observer sees every Cloudflare HTTP request the Broker or a Session makes,
// after the response arrived (or the transport failed). A non-nil error
// fails that call: the audit trail is fail-closed.
type Observer func(ctx context.Context, r RequestRecord) error

// RequestRecord describes one Cloudflare HTTP request. It never holds a
// token value.
type RequestRecord struct {
	// Purpose and Label name the session the request belongs to; Purpose is
	// "" for broker housekeeping (Ping, Sweep).
	Purpose Purpose
	Label   string
	// TokenID is the minted token used; "" for parent-token calls.
	TokenID string
	Method  string
	Path    string // URL path, no query
	Status  int    // 0 when no response arrived
	// CFRay is the response's cf-ray header, Cloudflare's request id.
	CFRay    string
	Duration time.Duration
	Err      string // transport error, if any
}

// withDefaults returns c with every unset optional field filled in.
func (c Config) withDefaults() Config {
	if c.APIBase == "" {
		c.APIBase = DefaultAPIBase
	}
	if !strings.HasSuffix(c.APIBase, "/") {
		c.APIBase += "/"
	}
	if c.TokenTTL == 0 {
		c.TokenTTL = DefaultTokenTTL
	}
	if c.HTTPClient == nil {
		c.HTTPClient = &http.Client{}
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Clock == nil {
		c.Clock = time.Now
	}
	if c.ReadRetries == 0 {
		c.ReadRetries = 2
	} else if c.ReadRetries < 0 {
		c.ReadRetries = 0
	}
	if c.RetryBackoff == 0 {
		c.RetryBackoff = 250 * time.Millisecond
	}
	if c.MaxRetryWait == 0 {
		c.MaxRetryWait = 5 * time.Second
	}
	if c.PollInterval == 0 {
		c.PollInterval = time.Second
	}
	if c.MaxPollInterval == 0 {
		c.MaxPollInterval = 10 * time.Second
	}
	if c.DeleteAttempts == 0 {
		c.DeleteAttempts = 4
	}
	if c.CloseTimeout == 0 {
		c.CloseTimeout = 30 * time.Second
	}
	if c.RequestTimeout == 0 {
		c.RequestTimeout = 60 * time.Second
	}
	if c.RateLimit == 0 {
		c.RateLimit = DefaultRateLimit
	}
	if c.RateWindow == 0 {
		c.RateWindow = DefaultRateWindow
	}
	if c.RateHeadroom == 0 {
		c.RateHeadroom = 0.2
	}
	if c.TokenCap == 0 {
		c.TokenCap = DefaultTokenCap
	}
	return c
}

// Validate reports every problem with the configuration at once.
func (c Config) Validate() error {
	var errs []error
	if c.APIBase != "" {
		u, err := url.Parse(c.APIBase)
		if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
			errs = append(errs, fmt.Errorf("APIBase %q: want an absolute http(s) URL such as %s", c.APIBase, DefaultAPIBase))
		}
	}
	if !isAccountID(c.AccountID) {
		errs = append(errs, fmt.Errorf("AccountID %q: want the 32 lowercase hex digits of a Cloudflare account id", c.AccountID))
	}
	switch {
	case c.ParentToken == "" && c.ParentSource == nil:
		errs = append(errs, errors.New("ParentToken: required (or ParentSource); an account API token with Account API Tokens Write"))
	case c.ParentToken != "" && c.ParentSource != nil:
		errs = append(errs, errors.New("ParentToken and ParentSource: set one of them, not both"))
	case c.ParentSource == nil && strings.ContainsAny(c.ParentToken, " \t\r\n"):
		// The value itself is never echoed.
		errs = append(errs, errors.New("ParentToken: contains whitespace; paste the token value alone"))
	}
	if c.TokenTTL != 0 && (c.TokenTTL < MinTokenTTL || c.TokenTTL > MaxTokenTTL) {
		errs = append(errs, fmt.Errorf("TokenTTL %v: allowed %v to %v", c.TokenTTL, MinTokenTTL, MaxTokenTTL))
	}
	if c.RequestIP != "" {
		if _, err := requestCIDR(c.RequestIP); err != nil {
			errs = append(errs, fmt.Errorf("RequestIP %q: want an IP address or CIDR range such as 203.0.113.7 or 203.0.113.0/24", c.RequestIP))
		}
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{
		{"RetryBackoff", c.RetryBackoff}, {"MaxRetryWait", c.MaxRetryWait}, {"PollInterval", c.PollInterval},
		{"MaxPollInterval", c.MaxPollInterval}, {"CloseTimeout", c.CloseTimeout}, {"RequestTimeout", c.RequestTimeout},
	} {
		if d.v < 0 {
			errs = append(errs, fmt.Errorf("%s %v: must not be negative", d.name, d.v))
		}
	}
	if c.DeleteAttempts < 0 {
		errs = append(errs, fmt.Errorf("DeleteAttempts %d: must not be negative", c.DeleteAttempts))
	}
	if c.RateLimit < 0 || c.RateWindow < 0 {
		errs = append(errs, fmt.Errorf("RateLimit %d per %v: must not be negative", c.RateLimit, c.RateWindow))
	}
	if c.RateHeadroom < 0 || c.RateHeadroom >= 1 {
		errs = append(errs, fmt.Errorf("RateHeadroom %v: a share of the limit from 0 to below 1, e.g. 0.2", c.RateHeadroom))
	}
	if c.TokenCap < 0 || (c.TokenCap > 0 && c.TokenCap <= tokenCapMargin) {
		errs = append(errs, fmt.Errorf("TokenCap %d: more than %d (Cloudflare's is %d)", c.TokenCap, tokenCapMargin, DefaultTokenCap))
	}
	return errors.Join(errs...)
}

func isAccountID(s string) bool {
	if len(s) != 32 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

// requestCIDR turns an address or range into the CIDR form Cloudflare's
// request_ip condition takes.
func requestCIDR(s string) (string, error) {
	if p, err := netip.ParsePrefix(s); err == nil {
		return p.Masked().String(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return "", err
	}
	return netip.PrefixFrom(a, a.BitLen()).String(), nil
}

// String describes the configuration with the parent token redacted.
func (c Config) String() string {
	return fmt.Sprintf("cloudflare.Config{APIBase:%q AccountID:%q ParentToken:%s ParentSource:%s TokenTTL:%v RequestIP:%q}",
		c.APIBase, c.AccountID, redacted(c.ParentToken), sourceName(c.ParentSource), c.TokenTTL, c.RequestIP)
}

// GoString keeps %#v from printing the parent token.
func (c Config) GoString() string { return c.String() }

// LogValue keeps slog from printing the parent token.
func (c Config) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("api_base", c.APIBase),
		slog.String("account_id", c.AccountID),
		slog.String("parent_token", redacted(c.ParentToken)),
		slog.String("parent_source", sourceName(c.ParentSource)),
		slog.Duration("token_ttl", c.TokenTTL),
		slog.String("request_ip", c.RequestIP),
	)
}

func sourceName(s ParentSource) string {
	if s == nil {
		return "(unset)"
	}
	return s.String()
}

func redacted(secret string) string {
	if secret == "" {
		return "(unset)"
	}
	return "[REDACTED]"
}
