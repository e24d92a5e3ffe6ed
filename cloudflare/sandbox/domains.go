package sandbox

import (
	"errors"
	"fmt"
	"net/http"
	"sort"
	"strings"
	"time"
)

// A Workers custom domain is a route on a zone: attaching or detaching one
// takes Workers Scripts Write on the account (what Cloudflare's API
// reference lists) and, in the sandbox, Workers Routes Write on the
// hostname's zone, so a token for zone A is refused on zone B.
var needRoutesWrite = []string{pgRoutesWrite}

func (d *domainRec) json() map[string]any {
	return map[string]any{
		"id":          d.ID,
		"hostname":    d.Hostname,
		"service":     d.Service,
		"environment": d.Environment,
		"zone_id":     d.ZoneID,
		"zone_name":   d.ZoneName,
		"cert_id":     d.CertID,
	}
}

// domainRequest is a parsed PUT workers/domains body.
type domainRequest struct {
	Hostname, Service, Environment, ZoneID, ZoneName string
}

// parseDomainAttach parses and checks a PUT workers/domains body.
func parseDomainAttach(body []byte) (domainRequest, error) {
	var req struct {
		Hostname    *string `json:"hostname"`
		Service     *string `json:"service"`
		Environment *string `json:"environment"`
		ZoneID      *string `json:"zone_id"`
		ZoneName    *string `json:"zone_name"`
	}
	if err := decodeJSON(body, &req); err != nil {
		return domainRequest{}, err
	}
	out := domainRequest{Environment: "production"}
	var errs []error
	if req.Hostname == nil || *req.Hostname == "" {
		errs = append(errs, errors.New("hostname: required; the zone apex or a subdomain, such as example.com or www.example.com"))
	} else {
		out.Hostname = strings.TrimSuffix(strings.ToLower(*req.Hostname), ".")
		if !validDomain(out.Hostname) {
			errs = append(errs, fmt.Errorf("hostname: %q is not a hostname such as example.com or www.example.com (no wildcards, no scheme or path)", *req.Hostname))
		}
	}
	if req.Service == nil || *req.Service == "" {
		errs = append(errs, errors.New("service: required; the name of the Worker to serve the hostname"))
	} else if out.Service = *req.Service; !scriptNameRE.MatchString(out.Service) {
		errs = append(errs, fmt.Errorf("service: %q is not a Worker name", out.Service))
	}
	if req.Environment != nil && *req.Environment != "" {
		out.Environment = *req.Environment
		if out.Environment != "production" {
			errs = append(errs, fmt.Errorf("environment: got %q; only production (environments are deprecated)", out.Environment))
		}
	}
	if req.ZoneID != nil && *req.ZoneID != "" {
		if out.ZoneID = *req.ZoneID; !isHex32(out.ZoneID) {
			errs = append(errs, fmt.Errorf("zone_id: %q is not a zone id (32 hex digits)", out.ZoneID))
		}
	}
	if req.ZoneName != nil {
		out.ZoneName = strings.TrimSuffix(strings.ToLower(*req.ZoneName), ".")
	}
	return out, errors.Join(errs...)
}

func (s *Sandbox) handleAttachDomain(w http.ResponseWriter, r *http.Request, tok *tokenRec) {
	body, ok := readBody(w, r)
	if !ok {
		return
	}
	req, err := parseDomainAttach(body)
	if err != nil {
		writeBadBody(w, codeDomainInvalid, err)
		return
	}
	id, err := randomHex(16)
	if err != nil {
		writeError(w, http.StatusInternalServerError, codeUnknownError, msgUnknownError)
		return
	}
	cert, err := newUUID()
	if err != nil {
		writeError(w, http.StatusInternalServerError, codeUnknownError, msgUnknownError)
		return
	}
	now := s.clock().UTC()
	s.mu.Lock()
	defer s.mu.Unlock()
	var out *domainRec
	err = s.commitLocked(func(st *state) error {
		z := st.zoneFor(req.Hostname)
		switch {
		case z == nil:
			return failf(http.StatusBadRequest, codeDomainNoZone, "hostname %s is not on a zone of this account; add the zone (or register the domain) first", req.Hostname)
		case req.ZoneID != "" && req.ZoneID != z.ID:
			return failf(http.StatusBadRequest, codeDomainNoZone, "zone_id %s is not the zone of %s (that is %s, %s)", req.ZoneID, req.Hostname, z.ID, z.Name)
		case req.ZoneName != "" && req.ZoneName != z.Name:
			return failf(http.StatusBadRequest, codeDomainNoZone, "zone_name %s is not the zone of %s (that is %s)", req.ZoneName, req.Hostname, z.Name)
		case !tok.allowsZone(z.ID, needRoutesWrite):
			return failf(http.StatusForbidden, codeAuthError, msgAuthError)
		case st.Scripts[req.Service] == nil:
			return failf(http.StatusNotFound, codeWorkerNotFound, msgWorkerNotFound)
		}
		// PUT attaches: a hostname already attached moves to this Worker and
		// keeps its id and certificate.
		for _, d := range st.Domains {
			if d.Hostname == req.Hostname {
				cp := *d
				cp.Service, cp.Environment = req.Service, req.Environment
				st.Domains[d.ID] = &cp
				out = &cp
				return nil
			}
		}
		out = &domainRec{
			ID: id, Hostname: req.Hostname, Service: req.Service, Environment: req.Environment,
			ZoneID: z.ID, ZoneName: z.Name, CertID: cert, CreatedOn: now,
		}
		st.Domains[id] = out
		return nil
	})
	if err != nil {
		s.writeErr(w, err)
		return
	}
	writeResult(w, http.StatusOK, out.json())
}

func (s *Sandbox) handleListDomains(w http.ResponseWriter, r *http.Request, _ *tokenRec) {
	q := r.URL.Query()
	filters := map[string]func(*domainRec) string{
		"hostname":    func(d *domainRec) string { return d.Hostname },
		"service":     func(d *domainRec) string { return d.Service },
		"zone_id":     func(d *domainRec) string { return d.ZoneID },
		"zone_name":   func(d *domainRec) string { return d.ZoneName },
		"environment": func(d *domainRec) string { return d.Environment },
	}
	s.mu.Lock()
	list := make([]*domainRec, 0, len(s.st.Domains))
next:
	for _, d := range s.st.Domains {
		for k, field := range filters {
			if v := q.Get(k); v != "" && !strings.EqualFold(v, field(d)) {
				continue next
			}
		}
		list = append(list, d)
	}
	s.mu.Unlock()
	sort.Slice(list, func(i, j int) bool { return list[i].Hostname < list[j].Hostname })
	out := make([]map[string]any, 0, len(list))
	for _, d := range list {
		out = append(out, d.json())
	}
	writeResult(w, http.StatusOK, out)
}

func (s *Sandbox) handleGetDomain(w http.ResponseWriter, r *http.Request, _ *tokenRec) {
	id := r.PathValue("domain_id")
	s.mu.Lock()
	d := s.st.Domains[id]
	s.mu.Unlock()
	if d == nil {
		writeError(w, http.StatusNotFound, codeDomainNotFound, fmt.Sprintf("custom domain %s not found", id))
		return
	}
	writeResult(w, http.StatusOK, d.json())
}

func (s *Sandbox) handleDetachDomain(w http.ResponseWriter, r *http.Request, tok *tokenRec) {
	id := r.PathValue("domain_id")
	s.mu.Lock()
	defer s.mu.Unlock()
	err := s.commitLocked(func(st *state) error {
		d := st.Domains[id]
		switch {
		case d == nil:
			return failf(http.StatusNotFound, codeDomainNotFound, "custom domain %s not found", id)
		case !tok.allowsZone(d.ZoneID, needRoutesWrite):
			return failf(http.StatusForbidden, codeAuthError, msgAuthError)
		}
		delete(st.Domains, id)
		return nil
	})
	if err != nil {
		s.writeErr(w, err)
		return
	}
	writeResult(w, http.StatusOK, nil)
}

// DomainRecord is a Workers custom domain of the sandbox account.
type DomainRecord struct {
	ID, Hostname, Service, ZoneID, ZoneName string
	CreatedOn                               time.Time
}

// Domains returns the account's Workers custom domains, sorted by hostname.
func (s *Sandbox) Domains() []DomainRecord {
	s.viewLocked()
	defer s.mu.Unlock()
	out := make([]DomainRecord, 0, len(s.st.Domains))
	for _, d := range s.st.Domains {
		out = append(out, DomainRecord{ID: d.ID, Hostname: d.Hostname, Service: d.Service, ZoneID: d.ZoneID, ZoneName: d.ZoneName, CreatedOn: d.CreatedOn})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Hostname < out[j].Hostname })
	return out
}
