package cloudflare

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/cloudflare/cloudflare-go/v6/workers"
	"github.com/cloudflare/cloudflare-go/v6/zones"
)

// Zone is a zone of the account (a registration through Cloudflare
// Registrar creates one).
type Zone struct {
	ID        string
	Name      string
	Status    string // active, pending, initializing, moved
	CreatedOn time.Time
}

// checkHostname canonicalises a hostname (the zone apex or a subdomain) and
// checks its syntax: ASCII labels of letters, digits and inner hyphens (IDN
// already in punycode), at least two, at most 253 octets, no wildcard.
func checkHostname(h string) (string, error) {
	h = canonical(h)
	if h == "" || len(h) > 253 {
		return "", fmt.Errorf("hostname %q: want a hostname such as example.com or www.example.com", h)
	}
	labels := strings.Split(h, ".")
	if len(labels) < 2 {
		return "", fmt.Errorf("hostname %q: want at least a name and an extension, such as example.com", h)
	}
	for _, l := range labels {
		ok := len(l) > 0 && len(l) <= 63 && l[0] != '-' && l[len(l)-1] != '-'
		for i := 0; ok && i < len(l); i++ {
			c := l[i]
			ok = c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-'
		}
		if !ok {
			return "", fmt.Errorf("hostname %q: label %q is not letters, digits and inner hyphens (IDN in punycode, no wildcard)", h, l)
		}
	}
	return h, nil
}

// ZoneFor returns the account's zone hostname is on: the zone named like
// the hostname or like its nearest parent. errors.Is(err, ErrNotFound) when
// the account has no such zone the token may read. Needs Zone Read on the
// zone (a session opened with AllZones, for a lookup).
func (s *Session) ZoneFor(ctx context.Context, hostname string) (*Zone, error) {
	const op = "zone for hostname"
	if err := s.ready(op, needZoneRead); err != nil {
		return nil, err
	}
	h, err := checkHostname(hostname)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	for name := h; strings.Contains(name, "."); {
		found, err := s.listZones(ctx, name)
		if err != nil {
			return nil, fmt.Errorf("%s %s: %w", op, h, err)
		}
		for _, z := range found {
			if z.Name == name {
				return &z, nil
			}
		}
		_, name, _ = strings.Cut(name, ".")
	}
	return nil, fmt.Errorf("%s %s: no zone of the account holds it: %w", op, h, ErrNotFound)
}

// ListZones lists the account's zones the token may read, by name. Needs Zone
// Read.
func (s *Session) ListZones(ctx context.Context) ([]Zone, error) {
	const op = "list zones"
	if err := s.ready(op, needZoneRead); err != nil {
		return nil, err
	}
	out, err := s.listZones(ctx, "")
	if err != nil {
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	return out, nil
}

// listZones reads every page of GET /zones (name "" for all) in this account.
func (s *Session) listZones(ctx context.Context, name string) ([]Zone, error) {
	const perPage = 50
	var out []Zone
	for page := 1; ; page++ {
		var got []zones.Zone
		err := s.b.read(ctx, func(ctx context.Context) error {
			var q zones.ZoneListParams
			var acct zones.ZoneListParamsAccount
			acct.ID.Value, acct.ID.Present = s.accountID(), true
			q.Account.Value, q.Account.Present = acct, true
			if name != "" {
				q.Name.Value, q.Name.Present = name, true
			}
			q.Page.Value, q.Page.Present = float64(page), true
			q.PerPage.Value, q.PerPage.Present = perPage, true
			res, err := zones.NewZoneService(s.opts()...).List(ctx, q)
			if err != nil {
				return err
			}
			got = res.Result
			return nil
		})
		if err != nil {
			return nil, err
		}
		for _, z := range got {
			out = append(out, Zone{ID: z.ID, Name: z.Name, Status: string(z.Status), CreatedOn: z.CreatedOn})
		}
		if len(got) < perPage {
			return out, nil
		}
	}
}

// CustomDomain is a Workers custom domain: a hostname on one of the
// account's zones served by a Worker.
type CustomDomain struct {
	ID          string
	Hostname    string
	Script      string // the Worker serving it (Cloudflare's "service")
	ZoneID      string
	ZoneName    string
	Environment string
	CertID      string
}

// AttachParams attaches a Worker to a hostname.
type AttachParams struct {
	// Hostname is the zone apex or a subdomain of ZoneID's zone.
	Hostname string
	// Script is the Worker that will serve it.
	Script string
	// ZoneID is the hostname's zone, the one the session's token holds
	// Workers Routes Write on.
	ZoneID string
}

// AttachDomain attaches a Worker to a hostname (PUT workers/domains). A
// hostname already attached moves to this Worker. The request is retried
// only on a 429; a 5xx or transport failure wraps ErrInDoubt (reconcile
// with ListDomains). Needs Workers Scripts Write on the account and
// Workers Routes Write on p.ZoneID.
func (s *Session) AttachDomain(ctx context.Context, p AttachParams) (*CustomDomain, error) {
	const op = "attach domain"
	if err := s.ready(op, needWorkersWrite, needRoutesWrite(p.ZoneID)); err != nil {
		return nil, err
	}
	h, err := checkHostname(p.Hostname)
	var errs []error
	if err != nil {
		errs = append(errs, err)
	}
	if !scriptNameRE.MatchString(p.Script) {
		errs = append(errs, fmt.Errorf("script name %q: want 1 to 63 lowercase letters, digits, '-' or '_'", p.Script))
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("%s: %w", op, errors.Join(errs...))
	}
	var res *workers.DomainUpdateResponse
	err = s.b.mutate(ctx, func(ctx context.Context) error {
		var q workers.DomainUpdateParams
		q.AccountID.Value, q.AccountID.Present = s.accountID(), true
		q.Hostname.Value, q.Hostname.Present = h, true
		q.Service.Value, q.Service.Present = p.Script, true
		q.ZoneID.Value, q.ZoneID.Present = p.ZoneID, true
		var err error
		res, err = workers.NewDomainService(s.opts()...).Update(ctx, q)
		return err
	})
	if err != nil {
		if ambiguous(err) {
			return nil, fmt.Errorf("%s %s: %w: %w", op, h, ErrInDoubt, err)
		}
		return nil, fmt.Errorf("%s %s: %w", op, h, err)
	}
	return &CustomDomain{
		ID: res.ID, Hostname: res.Hostname, Script: res.Service, ZoneID: res.ZoneID, ZoneName: res.ZoneName,
		Environment: res.Environment, CertID: res.CERTID,
	}, nil
}

// DomainFilter narrows ListDomains; empty fields match everything.
type DomainFilter struct {
	Hostname string
	Script   string
	ZoneID   string
}

// ListDomains lists the account's Workers custom domains, by hostname.
// Needs Workers Scripts Read (or Write).
func (s *Session) ListDomains(ctx context.Context, f DomainFilter) ([]CustomDomain, error) {
	const op = "list domains"
	if err := s.ready(op, needWorkersRead); err != nil {
		return nil, err
	}
	if f.Hostname != "" {
		h, err := checkHostname(f.Hostname)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", op, err)
		}
		f.Hostname = h
	}
	var list []workers.DomainListResponse
	err := s.b.read(ctx, func(ctx context.Context) error {
		var q workers.DomainListParams
		q.AccountID.Value, q.AccountID.Present = s.accountID(), true
		if f.Hostname != "" {
			q.Hostname.Value, q.Hostname.Present = f.Hostname, true
		}
		if f.Script != "" {
			q.Service.Value, q.Service.Present = f.Script, true
		}
		if f.ZoneID != "" {
			q.ZoneID.Value, q.ZoneID.Present = f.ZoneID, true
		}
		page, err := workers.NewDomainService(s.opts()...).List(ctx, q)
		if err != nil {
			return err
		}
		list = page.Result
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	out := make([]CustomDomain, 0, len(list))
	for _, d := range list {
		out = append(out, CustomDomain{
			ID: d.ID, Hostname: d.Hostname, Script: d.Service, ZoneID: d.ZoneID, ZoneName: d.ZoneName,
			Environment: d.Environment, CertID: d.CERTID,
		})
	}
	return out, nil
}

// GetDomain reads one custom domain; errors.Is(err, ErrNotFound) when there
// is none with that id. Needs Workers Scripts Read (or Write).
func (s *Session) GetDomain(ctx context.Context, id string) (*CustomDomain, error) {
	const op = "get domain"
	if err := s.ready(op, needWorkersRead); err != nil {
		return nil, err
	}
	if id == "" {
		return nil, fmt.Errorf("%s: the id is empty", op)
	}
	var d *workers.DomainGetResponse
	err := s.b.read(ctx, func(ctx context.Context) error {
		var q workers.DomainGetParams
		q.AccountID.Value, q.AccountID.Present = s.accountID(), true
		var err error
		d, err = workers.NewDomainService(s.opts()...).Get(ctx, id, q)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", op, id, err)
	}
	return &CustomDomain{
		ID: d.ID, Hostname: d.Hostname, Script: d.Service, ZoneID: d.ZoneID, ZoneName: d.ZoneName,
		Environment: d.Environment, CertID: d.CERTID,
	}, nil
}

// DetachDomain detaches a custom domain: its hostname stops serving the
// Worker. errors.Is(err, ErrNotFound) when it is already gone; a 5xx or
// transport failure wraps ErrInDoubt. Needs Workers Scripts Write on the
// account and Workers Routes Write on d.ZoneID.
func (s *Session) DetachDomain(ctx context.Context, d CustomDomain) error {
	const op = "detach domain"
	if err := s.ready(op, needWorkersWrite, needRoutesWrite(d.ZoneID)); err != nil {
		return err
	}
	if d.ID == "" {
		return fmt.Errorf("%s %s: the custom domain's id is empty; find it with ListDomains", op, d.Hostname)
	}
	err := s.b.mutate(ctx, func(ctx context.Context) error {
		var q workers.DomainDeleteParams
		q.AccountID.Value, q.AccountID.Present = s.accountID(), true
		_, err := workers.NewDomainService(s.opts()...).Delete(ctx, d.ID, q)
		return err
	})
	if err != nil {
		if ambiguous(err) {
			return fmt.Errorf("%s %s: %w: %w", op, d.Hostname, ErrInDoubt, err)
		}
		return fmt.Errorf("%s %s: %w", op, d.Hostname, err)
	}
	return nil
}
