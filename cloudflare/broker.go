package cloudflare

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/cloudflare/cloudflare-go/v6/accounts"
	"github.com/cloudflare/cloudflare-go/v6/shared"
)

// TokenNamePrefix starts the name of every token the Broker mints; Sweep
// deletes leftovers by it.
const TokenNamePrefix = "tollgate:"

// labelRE is what a session label may contain: it becomes part of the
// token's name, where ':' separates fields.
var labelRE = regexp.MustCompile(`^[A-Za-z0-9._-]{1,64}$`)

// Broker holds the parent credential and mints one short-lived, least-
// privilege account token per Session. The parent token is kept in an
// unexported field with no getter; nothing outside this package can read it.
type Broker struct {
	cfg    Config // ParentToken cleared
	source ParentSource
	log    *slog.Logger

	// parentMu guards parent: every request made with it holds the read
	// lock, a rotation (or a re-read after a 401) the write lock.
	parentMu sync.RWMutex
	parent   string

	groupsMu sync.Mutex
	groups   map[string]permissionGroup // by name

	mu   sync.Mutex
	live map[string]bool // minted token ids not yet deleted
	// owner is the lease of the process, written into token names.
	owner string
	// accountTokens is the account's token count (all of them, not only
	// tollgate's) as of the last Sweep plus mints minus deletions since;
	// -1 until a Sweep counted them.
	accountTokens int
	capWarned     bool

	budget *rateBudget
}

// NewBroker validates cfg and returns a Broker. No request is made.
func NewBroker(cfg Config) (*Broker, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("cloudflare config: %w", err)
	}
	cfg = cfg.withDefaults()
	b := &Broker{source: cfg.ParentSource, log: cfg.Logger, live: map[string]bool{}, accountTokens: -1,
		budget: newRateBudget(cfg.RateLimit, cfg.RateWindow, cfg.RateHeadroom, cfg.Clock, cfg.Logger)}
	if b.source == nil {
		b.source = StaticParent(cfg.ParentToken, "Config.ParentToken")
	}
	parent, err := b.source.Read()
	if err != nil {
		return nil, fmt.Errorf("cloudflare config: %w", err)
	}
	if err := checkToken(parent); err != nil {
		return nil, fmt.Errorf("cloudflare config: %s: %w", b.source, err)
	}
	b.parent = parent
	cfg.ParentToken, cfg.ParentSource = "", nil
	b.cfg = cfg
	warmEncoders.Do(func() {
		// cloudflare-go v6.10.0's JSON encoder builds the encoder for an
		// interface field's dynamic type on first use through a shared,
		// mutated encoder value: two goroutines minting their first tokens
		// at once race there (go test -race sees it). Encoding one token
		// body up front fills that cache before any concurrency.
		warm := &Broker{cfg: b.cfg}
		warm.cfg.RequestIP = "127.0.0.1"
		_, _ = warm.tokenParams("warm-up", []string{"0"}, []string{"0"}, grants{zones: []string{"0"}}, time.Unix(0, 0)).MarshalJSON()
		_, _ = warm.tokenParams("warm-up", nil, []string{"0"}, grants{allZones: true}, time.Unix(0, 0)).MarshalJSON()
	})
	return b, nil
}

var warmEncoders sync.Once

// tokens is a client for the parent token's value parent, its requests
// attributed to the session (p, label) it works for.
func (b *Broker) tokens(parent string, p Purpose, label string) *accounts.TokenService {
	return accounts.NewTokenService(b.clientOptions(parent, p, label, "", false)...)
}

// revoker is the parent-token client for finding and deleting tokens, which
// an Observer failure must not stop.
func (b *Broker) revoker(parent string, p Purpose, label string) *accounts.TokenService {
	return accounts.NewTokenService(b.clientOptions(parent, p, label, "", true)...)
}

// Alive is the number of tokens this Broker minted and has not yet deleted.
func (b *Broker) Alive() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.live)
}

// Ping verifies the parent token (for /healthz): it must be active.
func (b *Broker) Ping(ctx context.Context) error {
	err := b.withParent(ctx, func(parent string) error {
		_, err := b.verifyWith(ctx, parent, "ping")
		return err
	})
	if err != nil {
		return fmt.Errorf("verify cloudflare parent token: %w", err)
	}
	return nil
}

// permissionGroup is an entry of the permission-groups catalogue.
type permissionGroup struct {
	id   string
	zone bool // zone-scoped (else account-scoped)
}

// groupIDs resolves permission-group names to ids, from a cache filled from
// the permission-groups endpoint (refreshed once when a name is missing),
// and checks each group is scoped where it will be granted: account groups
// on the account, zone groups on zones.
func (b *Broker) groupIDs(ctx context.Context, p Purpose, label string, perm Permissions) (account, zone []string, err error) {
	b.groupsMu.Lock()
	defer b.groupsMu.Unlock()
	lookup := func() (account, zone, missing []string, errs []error) {
		for _, list := range []struct {
			names []string
			zone  bool
			ids   *[]string
		}{{perm.Account, false, &account}, {perm.Zone, true, &zone}} {
			for _, n := range list.names {
				g, ok := b.groups[n]
				switch {
				case !ok:
					missing = append(missing, n)
				case g.zone != list.zone && list.zone:
					errs = append(errs, fmt.Errorf("%q is an account permission group; grant it on the account (Permissions.Account)", n))
				case g.zone != list.zone:
					errs = append(errs, fmt.Errorf("%q is a zone permission group; grant it on zones (Permissions.Zone)", n))
				default:
					*list.ids = append(*list.ids, g.id)
				}
			}
		}
		return account, zone, missing, errs
	}
	account, zone, missing, errs := lookup()
	if len(missing) == 0 && len(errs) == 0 {
		return account, zone, nil
	}
	if len(missing) > 0 {
		var list []accounts.TokenPermissionGroupListResponse
		err := b.withParent(ctx, func(parent string) error {
			return b.read(ctx, func(ctx context.Context) error {
				var q accounts.TokenPermissionGroupListParams
				q.AccountID.Value, q.AccountID.Present = b.cfg.AccountID, true
				page, err := b.tokens(parent, p, label).PermissionGroups.List(ctx, q)
				if err != nil {
					return err
				}
				list = page.Result
				return nil
			})
		})
		if err != nil {
			return nil, nil, fmt.Errorf("list permission groups: %w", err)
		}
		groups := map[string]permissionGroup{}
		for _, g := range list {
			for _, s := range g.Scopes {
				switch s {
				case accounts.TokenPermissionGroupListResponseScopeComCloudflareAPIAccount:
					groups[g.Name] = permissionGroup{id: g.ID}
				case accounts.TokenPermissionGroupListResponseScopeComCloudflareAPIAccountZone:
					groups[g.Name] = permissionGroup{id: g.ID, zone: true}
				}
			}
		}
		b.groups = groups
		account, zone, missing, errs = lookup()
	}
	if len(missing) > 0 {
		errs = append(errs, fmt.Errorf("the account has no permission group named %s", strings.Join(quoteAll(missing), ", ")))
	}
	if len(errs) > 0 {
		return nil, nil, fmt.Errorf("permission groups: %w", errors.Join(errs...))
	}
	return account, zone, nil
}

func quoteAll(ss []string) []string {
	out := make([]string, len(ss))
	for i, s := range ss {
		out[i] = fmt.Sprintf("%q", s)
	}
	return out
}

// SetOwner names the process that mints from now on (its lease id): tokens
// are named "tollgate:<owner>:<purpose>:<label>:<random>", so a sweep by
// another process can tell a live process's tokens from a dead one's. It
// must be a label ('.', '_', '-', letters and digits).
func (b *Broker) SetOwner(owner string) error {
	if !labelRE.MatchString(owner) {
		return fmt.Errorf("cloudflare token owner %q: want 1 to 64 letters, digits, '.', '_' or '-'", owner)
	}
	b.mu.Lock()
	b.owner = owner
	b.mu.Unlock()
	return nil
}

// Session mints a token named "tollgate:[<owner>:]<purpose>:<label>:<random>" holding
// exactly p's permission groups on the account alone, expiring TokenTTL from
// now (and bound to RequestIP if configured), and returns a Session whose
// calls all use that token. Close it when the operation is done.
func (b *Broker) Session(ctx context.Context, p Purpose, label string) (*Session, error) {
	if !p.Valid() {
		return nil, fmt.Errorf("cloudflare session: purpose %q is not one of %v", p, Purposes())
	}
	perm := p.Permissions()
	return b.Open(ctx, SessionSpec{Name: string(p), Label: label, Permissions: perm, AllZones: len(perm.Zone) > 0})
}

// Open mints a token for spec, named "tollgate:<name>:<label>:<random>":
// spec's account groups on the account, its zone groups on exactly the
// named zones (or on all of the account's zones), nothing else, expiring
// TokenTTL from now (and bound to RequestIP if configured). The Session's
// calls all use that token and fail locally, before any request, when it
// lacks what they need. Close it when the operation is done.
func (b *Broker) Open(ctx context.Context, spec SessionSpec) (*Session, error) {
	if err := spec.Validate(); err != nil {
		return nil, err
	}
	p := Purpose(spec.Name)
	label := spec.Label
	g := grants{
		account: slices.Clone(spec.Permissions.Account), zone: slices.Clone(spec.Permissions.Zone),
		zones: slices.Clone(spec.Zones), allZones: spec.AllZones,
	}
	accountIDs, zoneIDs, err := b.groupIDs(ctx, p, label, spec.Permissions)
	if err != nil {
		return nil, fmt.Errorf("mint %s token: %w", p, err)
	}
	suffix := make([]byte, 8)
	if _, err := rand.Read(suffix); err != nil {
		return nil, fmt.Errorf("mint %s token: %w", p, err)
	}
	if err := b.tokenRoom(); err != nil {
		return nil, fmt.Errorf("mint %s token: %w", p, err)
	}
	b.mu.Lock()
	owner := b.owner
	b.mu.Unlock()
	name := TokenNamePrefix + string(p) + ":" + label + ":" + hex.EncodeToString(suffix)
	if owner != "" {
		name = TokenNamePrefix + owner + ":" + string(p) + ":" + label + ":" + hex.EncodeToString(suffix)
	}
	expires := b.cfg.Clock().Add(b.cfg.TokenTTL).UTC().Truncate(time.Second)

	var res *accounts.TokenNewResponse
	if ctx.Err() != nil {
		return nil, fmt.Errorf("mint %s token: %w", p, ctx.Err())
	}
	params := b.tokenParams(name, accountIDs, zoneIDs, g, expires)
	err = b.withParent(ctx, func(parent string) error {
		return b.mutate(ctx, func(ctx context.Context) error {
			var err error
			res, err = b.tokens(parent, p, label).New(ctx, params)
			return err
		})
	})
	if err == nil && (res.ID == "" || res.Value == "") {
		err = errors.New("token create answered without an id or value")
	}
	if err != nil {
		if ambiguous(err) {
			// The token may exist without us knowing its id: find it by its
			// unique name and delete it now rather than leave it to Sweep.
			b.deleteByName(ctx, p, label, name)
		}
		return nil, fmt.Errorf("mint %s token: %w", p, err)
	}
	b.tokenMinted(res.ID)
	groupNames := append(slices.Clone(g.account), g.zone...)
	b.log.LogAttrs(ctx, slog.LevelDebug, "minted cloudflare token",
		slog.String(logPurpose, string(p)), slog.String(logLabel, label), slog.String(logTokenID, res.ID),
		slog.Time(logExpires, expires), slog.Any(logGroups, groupNames), slog.Any(logZones, zonesForLog(g)))
	return &Session{
		Purpose: p, Label: label, TokenID: res.ID, ExpiresAt: expires, PermissionGroups: groupNames, Zones: slices.Clone(g.zones),
		b: b, token: res.Value, grants: g,
	}, nil
}

func zonesForLog(g grants) []string {
	if g.allZones {
		return []string{"*"}
	}
	return g.zones
}

// tokenParams is the create body: an allow policy for the account groups on
// the account, one for the zone groups on the zones (or all of the
// account's zones), the expiry and the optional IP condition.
func (b *Broker) tokenParams(name string, accountIDs, zoneIDs []string, g grants, expires time.Time) accounts.TokenNewParams {
	var params accounts.TokenNewParams
	params.AccountID.Value, params.AccountID.Present = b.cfg.AccountID, true
	params.Name.Value, params.Name.Present = name, true
	policy := func(ids []string, res shared.TokenPolicyResourcesUnionParam) shared.TokenPolicyParam {
		var pol shared.TokenPolicyParam
		pol.Effect.Value, pol.Effect.Present = shared.TokenPolicyEffectAllow, true
		groups := make([]shared.TokenPolicyPermissionGroupParam, len(ids))
		for i, id := range ids {
			groups[i].ID.Value, groups[i].ID.Present = id, true
		}
		pol.PermissionGroups.Value, pol.PermissionGroups.Present = groups, true
		pol.Resources.Value, pol.Resources.Present = res, true
		return pol
	}
	account := "com.cloudflare.api.account." + b.cfg.AccountID
	var pols []shared.TokenPolicyParam
	if len(accountIDs) > 0 {
		pols = append(pols, policy(accountIDs, shared.TokenPolicyResourcesIAMResourcesTypeObjectStringParam{account: "*"}))
	}
	if len(zoneIDs) > 0 {
		if g.allZones {
			pols = append(pols, policy(zoneIDs, shared.TokenPolicyResourcesIAMResourcesTypeObjectNestedParam{
				account: {"com.cloudflare.api.account.zone.*": "*"},
			}))
		} else {
			res := shared.TokenPolicyResourcesIAMResourcesTypeObjectStringParam{}
			for _, z := range g.zones {
				res["com.cloudflare.api.account.zone."+z] = "*"
			}
			pols = append(pols, policy(zoneIDs, res))
		}
	}
	params.Policies.Value, params.Policies.Present = pols, true
	params.ExpiresOn.Value, params.ExpiresOn.Present = expires, true
	if b.cfg.RequestIP != "" {
		cidr, _ := requestCIDR(b.cfg.RequestIP) // validated by NewBroker
		var ip accounts.TokenNewParamsConditionRequestIP
		ip.In.Value, ip.In.Present = []string{cidr}, true
		var cond accounts.TokenNewParamsCondition
		cond.RequestIP.Value, cond.RequestIP.Present = ip, true
		params.Condition.Value, params.Condition.Present = cond, true
	}
	return params
}

// deleteToken deletes a minted token with the parent token, retrying with
// backoff; a 404 means it is already gone. Deleting is idempotent, so every
// failure but a clean refusal is retried.
func (b *Broker) deleteToken(ctx context.Context, p Purpose, label, id string) error {
	wait := b.cfg.RetryBackoff
	var err error
	for n := 1; n <= b.cfg.DeleteAttempts; n++ {
		err = b.withParent(ctx, func(parent string) error {
			cctx, ci := withCall(ctx)
			var params accounts.TokenDeleteParams
			params.AccountID.Value, params.AccountID.Present = b.cfg.AccountID, true
			_, err := b.revoker(parent, p, label).Delete(cctx, id, params)
			return mapError(err, ci)
		})
		var ae *APIError
		switch {
		case err == nil, errors.Is(err, ErrNotFound):
			b.tokenDeleted(id, err == nil)
			return nil
		case errors.As(err, &ae) && ae.Status < 500 && ae.Status != 429:
			return err // refused (e.g. the parent token lost its permission): retrying won't help
		case ctx.Err() != nil:
			return err
		}
		if n < b.cfg.DeleteAttempts {
			b.log.LogAttrs(ctx, slog.LevelDebug, "retrying cloudflare token delete",
				slog.String(logTokenID, id), slog.Int(logAttempt, n), slog.Duration(logWait, wait), slog.String(logErr, err.Error()))
			if serr := sleep(ctx, min(wait, b.cfg.MaxRetryWait)); serr != nil {
				return err
			}
			wait *= 2
		}
	}
	return err
}

// listTokens returns every account token, page by page.
func (b *Broker) listTokens(ctx context.Context, p Purpose, label string) ([]shared.Token, error) {
	const perPage = 50
	var all []shared.Token
	for page := 1; ; page++ {
		var got []shared.Token
		err := b.withParent(ctx, func(parent string) error {
			return b.read(ctx, func(ctx context.Context) error {
				var q accounts.TokenListParams
				q.AccountID.Value, q.AccountID.Present = b.cfg.AccountID, true
				q.Page.Value, q.Page.Present = float64(page), true
				q.PerPage.Value, q.PerPage.Present = perPage, true
				res, err := b.revoker(parent, p, label).List(ctx, q)
				if err != nil {
					return err
				}
				got = res.Result
				return nil
			})
		})
		if err != nil {
			return nil, fmt.Errorf("list account tokens (page %d): %w", page, err)
		}
		all = append(all, got...)
		if len(got) < perPage {
			return all, nil
		}
	}
}

// deleteByName cleans up after an ambiguous create: it runs even when ctx is
// done, bounded by CloseTimeout, and only logs failures (Sweep retries).
func (b *Broker) deleteByName(ctx context.Context, p Purpose, label, name string) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), b.cfg.CloseTimeout)
	defer cancel()
	toks, err := b.listTokens(ctx, p, label)
	if err != nil {
		b.log.LogAttrs(ctx, slog.LevelWarn, "could not look for a half-created cloudflare token; Sweep will delete it",
			slog.String(logPurpose, string(p)), slog.String(logLabel, label), slog.String(logErr, err.Error()))
		return
	}
	for _, t := range toks {
		if t.Name != name {
			continue
		}
		if err := b.deleteToken(ctx, p, label, t.ID); err != nil {
			b.log.LogAttrs(ctx, slog.LevelWarn, "could not delete a half-created cloudflare token; Sweep will delete it",
				slog.String(logTokenID, t.ID), slog.String(logErr, err.Error()))
			continue
		}
		b.log.LogAttrs(ctx, slog.LevelInfo, "deleted half-created cloudflare token", slog.String(logTokenID, t.ID))
	}
}

// Sweep deletes every account token named with TokenNamePrefix that this
// Broker does not hold: the leftovers of a crashed process. It assumes no
// other tollgate process mints on the account; with several, use SweepDead.
func (b *Broker) Sweep(ctx context.Context) (int, error) {
	return b.SweepDead(ctx, func(string) bool { return false })
}

// TokenName is what a tollgate token's name says about it.
type TokenName struct {
	Owner   string // the minting process's lease; "" for a name without one
	Purpose string
	Label   string
}

// ParseTokenName reads a name the Broker gave a token:
// "tollgate:[<owner>:]<purpose>:<label>:<random>". ok is false for any other.
func ParseTokenName(name string) (TokenName, bool) {
	rest, ok := strings.CutPrefix(name, TokenNamePrefix)
	if !ok {
		return TokenName{}, false
	}
	parts := strings.Split(rest, ":")
	switch len(parts) {
	case 3:
		return TokenName{Purpose: parts[0], Label: parts[1]}, true
	case 4:
		return TokenName{Owner: parts[0], Purpose: parts[1], Label: parts[2]}, true
	}
	return TokenName{}, false
}

// TokenOwner returns the owner written into a tollgate token name, "" for a
// name without one (minted before owners, or by a broker without one).
func TokenOwner(name string) string {
	n, _ := ParseTokenName(name)
	return n.Owner
}

// SweepDead deletes the account tokens named with TokenNamePrefix that this
// Broker does not hold and whose owner alive reports dead (a name without an
// owner counts as dead): the leftovers of processes that are gone. A live
// process's tokens are never touched.
func (b *Broker) SweepDead(ctx context.Context, alive func(owner string) bool) (int, error) {
	toks, err := b.listTokens(ctx, "", "sweep")
	if err != nil {
		return 0, fmt.Errorf("sweep tokens: %w", err)
	}
	b.countTokens(len(toks))
	deleted := 0
	var errs []error
	for _, t := range toks {
		if !strings.HasPrefix(t.Name, TokenNamePrefix) {
			continue
		}
		b.mu.Lock()
		mine := b.live[t.ID]
		b.mu.Unlock()
		if owner := TokenOwner(t.Name); mine || (owner != "" && alive(owner)) {
			continue
		}
		if err := b.deleteToken(ctx, "", "sweep", t.ID); err != nil {
			errs = append(errs, fmt.Errorf("delete token %s: %w", t.ID, err))
			continue
		}
		deleted++
	}
	b.log.LogAttrs(ctx, slog.LevelInfo, "swept leftover cloudflare tokens", slog.Int(logCount, deleted))
	if len(errs) > 0 {
		return deleted, fmt.Errorf("sweep tokens: %w", errors.Join(errs...))
	}
	return deleted, nil
}
