package sandbox

import (
	"fmt"
	"net/http"
	"sort"
	"strings"
	"time"
)

// needZoneRead is what reading a zone takes, on that zone.
var needZoneRead = []string{pgZoneRead}

// addZone creates the zone of a registered domain (or returns it). The id
// is derived from the name.
func (st *state) addZone(name string, now time.Time) *zoneRec {
	id := zoneID(name)
	if z := st.Zones[id]; z != nil {
		return z
	}
	z := &zoneRec{ID: id, Name: name, Status: "active", CreatedOn: now, ModifiedOn: now, ActivatedOn: now}
	st.Zones[id] = z
	return z
}

// zoneFor returns the account's zone a hostname is on: the zone named like
// the hostname or its longest parent.
func (st *state) zoneFor(hostname string) *zoneRec {
	for name := hostname; strings.Contains(name, "."); {
		if z := st.Zones[zoneID(name)]; z != nil && z.Name == name {
			return z
		}
		_, name, _ = strings.Cut(name, ".")
	}
	return nil
}

// ZoneRecord is a zone of the sandbox account.
type ZoneRecord struct {
	ID, Name, Status string
	CreatedOn        time.Time
}

// Zones returns the account's zones, sorted by name.
func (s *Sandbox) Zones() []ZoneRecord {
	s.viewLocked()
	defer s.mu.Unlock()
	out := make([]ZoneRecord, 0, len(s.st.Zones))
	for _, z := range s.st.Zones {
		out = append(out, ZoneRecord{ID: z.ID, Name: z.Name, Status: z.Status, CreatedOn: z.CreatedOn})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// AddZone adds an active zone to the account without registering the
// domain, as if it had been added to Cloudflare from elsewhere (a transfer,
// the dashboard), and returns its id. Registrations create their zones on
// their own.
func (s *Sandbox) AddZone(name string) (string, error) {
	name = strings.TrimSuffix(strings.ToLower(strings.TrimSpace(name)), ".")
	if !validDomain(name) {
		return "", fmt.Errorf("add zone: %q is not a domain name such as example.com", name)
	}
	now := s.clock().UTC().Truncate(time.Second)
	s.mu.Lock()
	defer s.mu.Unlock()
	var id string
	err := s.commitLocked(func(st *state) error {
		id = st.addZone(name, now).ID
		return nil
	})
	return id, err
}

func (z *zoneRec) json() map[string]any {
	return map[string]any{
		"id":                    z.ID,
		"name":                  z.Name,
		"status":                z.Status,
		"paused":                false,
		"type":                  "full",
		"development_mode":      0,
		"name_servers":          nameServers,
		"original_name_servers": nil,
		"original_registrar":    nil,
		"original_dnshost":      nil,
		"vanity_name_servers":   []string{},
		"created_on":            z.CreatedOn.Format(time.RFC3339Nano),
		"modified_on":           z.ModifiedOn.Format(time.RFC3339Nano),
		"activated_on":          z.ActivatedOn.Format(time.RFC3339Nano),
		"meta": map[string]any{
			"step": 2, "custom_certificate_quota": 0, "page_rule_quota": 3, "phishing_detected": false,
			"cdn_only": false, "dns_only": false, "foundation_dns": false,
		},
		"owner":       map[string]any{"id": accountID, "type": "organization", "name": accountName},
		"account":     map[string]any{"id": accountID, "name": accountName},
		"tenant":      map[string]any{"id": nil, "name": nil},
		"tenant_unit": map[string]any{"id": nil},
		"permissions": []string{"#zone:read"},
		"plan": map[string]any{
			"id": freePlanID, "name": "Free Website", "price": 0, "currency": "USD", "frequency": "",
			"is_subscribed": true, "can_subscribe": false, "legacy_id": "free", "legacy_discount": false,
			"externally_managed": false,
		},
	}
}

// matchName applies the zones list's name filter: an exact name, or
// Cloudflare's contains:, starts_with: and ends_with: operators.
func matchName(filter, name string) bool {
	switch {
	case filter == "":
		return true
	case strings.HasPrefix(filter, "contains:"):
		return strings.Contains(name, strings.TrimPrefix(filter, "contains:"))
	case strings.HasPrefix(filter, "starts_with:"):
		return strings.HasPrefix(name, strings.TrimPrefix(filter, "starts_with:"))
	case strings.HasPrefix(filter, "ends_with:"):
		return strings.HasSuffix(name, strings.TrimPrefix(filter, "ends_with:"))
	}
	return strings.EqualFold(filter, name)
}

// handleListZones lists the zones the token may read (Zone Read on them);
// a token with none gets an empty list, as from Cloudflare.
func (s *Sandbox) handleListZones(w http.ResponseWriter, r *http.Request, tok *tokenRec) {
	q := r.URL.Query()
	page, err := queryInt(q.Get("page"), 1, 1, 1_000_000)
	if err != nil {
		writeError(w, http.StatusBadRequest, codeZoneRequest, "page: "+err.Error())
		return
	}
	perPage, err := queryInt(q.Get("per_page"), 20, 5, 50)
	if err != nil {
		writeError(w, http.StatusBadRequest, codeZoneRequest, "per_page: "+err.Error())
		return
	}
	status := q.Get("status")
	switch status {
	case "", "initializing", "pending", "active", "moved":
	default:
		writeError(w, http.StatusBadRequest, codeZoneRequest, fmt.Sprintf("status: got %q; one of initializing, pending, active, moved", status))
		return
	}
	dir := q.Get("direction")
	if dir != "" && dir != "asc" && dir != "desc" {
		writeError(w, http.StatusBadRequest, codeZoneRequest, fmt.Sprintf("direction: got %q; one of asc, desc", dir))
		return
	}
	acctID, acctName, name := q.Get("account.id"), q.Get("account.name"), q.Get("name")
	s.mu.Lock()
	zones := make([]*zoneRec, 0, len(s.st.Zones))
	for _, z := range s.st.Zones {
		if !tok.allowsZone(z.ID, needZoneRead) || !matchName(name, z.Name) ||
			(status != "" && z.Status != status) ||
			(acctID != "" && acctID != accountID) || (acctName != "" && !matchName(acctName, accountName)) {
			continue
		}
		zones = append(zones, z)
	}
	sort.Slice(zones, func(i, j int) bool {
		if dir == "desc" {
			return zones[i].Name > zones[j].Name
		}
		return zones[i].Name < zones[j].Name
	})
	out := []map[string]any{}
	for i := (page - 1) * perPage; i < len(zones) && len(out) < perPage; i++ {
		out = append(out, zones[i].json())
	}
	total := len(zones)
	s.mu.Unlock()
	writeJSON(w, http.StatusOK, envelope{Success: true, Result: out, ResultInfo: map[string]any{
		"page": page, "per_page": perPage, "count": len(out), "total_count": total,
		"total_pages": (total + perPage - 1) / perPage,
	}})
}

func (s *Sandbox) handleGetZone(w http.ResponseWriter, r *http.Request, tok *tokenRec) {
	id := r.PathValue("zone_id")
	s.mu.Lock()
	z := s.st.Zones[id]
	var res map[string]any
	if z != nil {
		res = z.json()
	}
	s.mu.Unlock()
	switch {
	case z == nil:
		writeError(w, http.StatusNotFound, codeNoObject, fmt.Sprintf("Could not route to /zones/%s, perhaps your object identifier is invalid?", id))
	case !tok.allowsZone(id, needZoneRead):
		writeError(w, http.StatusForbidden, codeUnauthorized, msgUnauthorized)
	default:
		writeResult(w, http.StatusOK, res)
	}
}
