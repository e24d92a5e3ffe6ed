package authz

import (
	"container/list"
	"encoding/base64"
	"reflect"
	"slices"
	"strconv"
	"sync"
	"time"

	enginev1 "github.com/cerbos/cerbos/api/genpb/cerbos/engine/v1"
)

// Defaults for [DecisionCacheConfig].
const (
	DefaultDecisionCacheSize = 10_000
	DefaultDecisionCacheTTL  = time.Minute
)

// DecisionCacheConfig configures [WithDecisionCache].
type DecisionCacheConfig struct {
	// Policies says which policy set the PDP serves and what it reads;
	// required. [Managed] is one; [WatchPolicies] makes one for an external
	// PDP.
	Policies PolicySource
	// Size bounds the number of decisions kept (least recently used go
	// first); default DefaultDecisionCacheSize.
	Size int
	// TTL bounds how long a decision is kept; default DefaultDecisionCacheTTL.
	TTL time.Duration
	// Clock is now for TTLs; default time.Now.
	Clock func() time.Time
}

// WithDecisionCache keeps the PDP's decisions and answers a repeated check
// from memory. A decision is reused only under the policy generation it was
// made under, for the same principal id, roles and read attributes, the
// same resource kind, id, attribute names and read attribute values (see
// [PolicyReads]), the same action, and only after the PDP has accepted the
// principal's other attributes for that kind (its schema may constrain
// them). Never kept: denies because the PDP was unavailable, answers with
// schema validation errors, and decisions for a resource kind whose rules
// read the clock.
func WithDecisionCache(cfg DecisionCacheConfig) Option {
	return func(c *clientConfig) { c.cache = &cfg }
}

// Stats counts a client's work.
type Stats struct {
	// Requests is the number of CheckResources calls sent to the PDP.
	Requests uint64
	// CacheHits and CacheMisses count decisions (one per resource and
	// action) answered from the decision cache or not; both stay 0 without
	// one. A check the cache may not answer (clock-reading rules, policies
	// being reloaded) is a miss.
	CacheHits, CacheMisses uint64
}

// decisionCache is a bounded LRU of decisions of one policy generation.
type decisionCache struct {
	src  PolicySource
	size int
	ttl  time.Duration
	now  func() time.Time

	mu  sync.Mutex
	gen uint64
	ll  *list.List // front = most recent
	m   map[string]*list.Element
}

type cacheEntry struct {
	key string
	at  time.Time
	d   Decision
}

func newDecisionCache(cfg DecisionCacheConfig) *decisionCache {
	c := &decisionCache{src: cfg.Policies, size: cfg.Size, ttl: cfg.TTL, now: cfg.Clock, ll: list.New(), m: map[string]*list.Element{}}
	if c.size <= 0 {
		c.size = DefaultDecisionCacheSize
	}
	if c.ttl <= 0 {
		c.ttl = DefaultDecisionCacheTTL
	}
	if c.now == nil {
		c.now = time.Now
	}
	return c
}

// turnover drops everything when the generation moved on. Callers hold mu.
func (c *decisionCache) turnover(gen uint64) bool {
	if gen == c.gen {
		return true
	}
	if gen < c.gen {
		return false // a check that started before the change: nothing for it
	}
	c.gen = gen
	c.ll.Init()
	clear(c.m)
	return true
}

func (c *decisionCache) get(gen uint64, key string) (Decision, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.turnover(gen) {
		return Decision{}, false
	}
	el, ok := c.m[key]
	if !ok {
		return Decision{}, false
	}
	e := el.Value.(*cacheEntry)
	if c.now().Sub(e.at) >= c.ttl {
		c.ll.Remove(el)
		delete(c.m, key)
		return Decision{}, false
	}
	c.ll.MoveToFront(el)
	return e.d.clone(), true
}

func (c *decisionCache) put(gen uint64, key string, d Decision) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.turnover(gen) {
		return
	}
	if el, ok := c.m[key]; ok {
		e := el.Value.(*cacheEntry)
		e.at, e.d = c.now(), d.clone()
		c.ll.MoveToFront(el)
		return
	}
	c.m[key] = c.ll.PushFront(&cacheEntry{key: key, at: c.now(), d: d.clone()})
	for c.ll.Len() > c.size {
		old := c.ll.Back()
		c.ll.Remove(old)
		delete(c.m, old.Value.(*cacheEntry).key)
	}
}

// clone copies the slices a caller might append to.
func (d Decision) clone() Decision {
	d.Reasons = slices.Clone(d.Reasons)
	d.Outputs = slices.Clone(d.Outputs)
	return d
}

// maxSubjects bounds the prepared principals a client keeps.
const maxSubjects = 1024

// subject is a principal prepared for checks: its request form built and
// validated once, its part of the decision-cache key, and the resource
// kinds whose schemas the PDP accepted its attributes for.
type subject struct {
	id    string
	roles []string
	attr  map[string]any
	built *enginev1.Principal
	err   error

	mu     sync.Mutex
	keyGen uint64
	key    string
	clean  map[string]uint64 // resource kind -> generation
}

// subject returns p prepared, from the client's own table when the same
// principal (every attribute equal) was seen before: a session's principal
// is built and validated once.
func (c *Client) subject(p Principal) *subject {
	canon := appendKeyString(nil, p.ID)
	canon = appendKeyValue(canon, p.Roles)
	canon = appendKeyValue(canon, p.Attr)
	c.subjMu.Lock()
	s, ok := c.subjects[string(canon)]
	c.subjMu.Unlock()
	if ok {
		return s
	}
	s = &subject{id: p.ID, roles: slices.Clone(p.Roles), attr: p.Attr}
	s.built, s.err = buildPrincipal(p)
	c.subjMu.Lock()
	if len(c.subjects) >= maxSubjects {
		clear(c.subjects)
	}
	c.subjects[string(canon)] = s
	c.subjMu.Unlock()
	return s
}

// cacheKey is the principal's part of a decision key under st: id, roles
// and the attributes the policies read. ok is false while the PDP has not
// yet accepted this principal's attributes for kind under st.
func (s *subject) cacheKey(st PolicyState, kind string) (key string, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.clean[kind] != st.Generation {
		return "", false
	}
	if s.keyGen != st.Generation {
		b := appendKeyString(nil, s.id)
		b = appendKeyValue(b, s.roles)
		names, all := st.Reads.PrincipalAttrs()
		b = appendAttrs(b, s.attr, names, all)
		s.key, s.keyGen = string(b), st.Generation
	}
	return s.key, true
}

// accepted records that the PDP found no problem with the principal's
// attributes for kind under generation gen.
func (s *subject) accepted(kind string, gen uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.clean == nil {
		s.clean = map[string]uint64{}
	}
	s.clean[kind] = gen
}

// resourceKey is the resource's part of a decision key: kind, id, the names
// of all its attributes (a schema may require or forbid them) and the
// values of those the policies read.
func resourceKey(reads *PolicyReads, r Resource) string {
	b := appendKeyString(nil, r.Kind)
	b = appendKeyString(b, r.ID)
	names := make([]string, 0, len(r.Attr))
	for k := range r.Attr {
		names = append(names, k)
	}
	slices.Sort(names)
	b = appendKeyValue(b, names)
	read, all := reads.ResourceAttrs(r.Kind)
	return string(appendAttrs(b, r.Attr, read, all))
}

// appendAttrs appends the named attributes (all of them when all) in a
// fixed order; a missing one is written as absent, not as null.
func appendAttrs(b []byte, attr map[string]any, names []string, all bool) []byte {
	if all {
		return appendKeyValue(b, attr)
	}
	for _, n := range names {
		v, ok := attr[n]
		if !ok {
			b = append(b, '-')
			continue
		}
		b = appendKeyString(b, n)
		b = appendKeyValue(b, v)
	}
	return b
}

func appendKeyString(b []byte, s string) []byte {
	b = strconv.AppendInt(b, int64(len(s)), 10)
	b = append(b, ':')
	return append(b, s...)
}

// appendKeyValue encodes v as the PDP sees it, type-tagged and unambiguous:
// every number is a double (5 and 5.0 are the same to the PDP), times are
// RFC 3339 strings, []byte is base64. Values were checked by checkAttrs.
func appendKeyValue(b []byte, v any) []byte {
	switch v := v.(type) {
	case nil:
		return append(b, 'n')
	case string:
		return appendKeyString(append(b, 's'), v)
	case bool:
		if v {
			return append(b, 'T')
		}
		return append(b, 'F')
	case time.Time:
		return appendKeyString(append(b, 's'), v.Format(time.RFC3339))
	case []byte:
		return appendKeyString(append(b, 's'), base64.StdEncoding.EncodeToString(v))
	case []string:
		b = strconv.AppendInt(append(b, 'l'), int64(len(v)), 10)
		for _, s := range v {
			b = appendKeyString(append(b, 's'), s)
		}
		return b
	case map[string]any:
		keys := make([]string, 0, len(v))
		for k := range v {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		b = strconv.AppendInt(append(b, 'm'), int64(len(v)), 10)
		for _, k := range keys {
			b = appendKeyString(b, k)
			b = appendKeyValue(b, v[k])
		}
		return b
	}
	rv := reflect.ValueOf(v)
	switch rv.Kind() {
	case reflect.Bool:
		return appendKeyValue(b, rv.Bool())
	case reflect.String:
		return appendKeyValue(b, rv.String())
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return strconv.AppendFloat(append(b, 'f'), float64(rv.Int()), 'g', -1, 64)
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
		return strconv.AppendFloat(append(b, 'f'), float64(rv.Uint()), 'g', -1, 64)
	case reflect.Float32, reflect.Float64:
		return strconv.AppendFloat(append(b, 'f'), rv.Float(), 'g', -1, 64)
	case reflect.Slice, reflect.Array:
		b = strconv.AppendInt(append(b, 'l'), int64(rv.Len()), 10)
		for i := range rv.Len() {
			b = appendKeyValue(b, rv.Index(i).Interface())
		}
		return b
	case reflect.Map:
		m := make(map[string]any, rv.Len())
		iter := rv.MapRange()
		for iter.Next() {
			m[iter.Key().String()] = iter.Value().Interface()
		}
		return appendKeyValue(b, m)
	}
	// Unsupported types never get here (checkAttrs refuses them); keep
	// them apart from everything else anyway.
	return appendKeyString(append(b, '?'), reflect.TypeOf(v).String())
}
