package server

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/tollgatehq/tollgate/authz"
	"github.com/tollgatehq/tollgate/cloudflare"
	"github.com/tollgatehq/tollgate/ledger"
)

// metrics are the Prometheus series served on /metrics. A nil *metrics
// records nothing, so tests and CLI paths need no registry.
type metrics struct {
	registry   *prometheus.Registry
	toolCalls  *prometheus.CounterVec
	decisions  *prometheus.HistogramVec
	reserves   *prometheus.HistogramVec
	cloudflare *prometheus.HistogramVec
	executions *prometheus.HistogramVec
	pending    prometheus.Gauge
}

var latencyBuckets = []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30}

func newMetrics(db *ledger.DB, broker *cloudflare.Broker, az *authz.Client) *metrics {
	m := &metrics{
		registry: prometheus.NewRegistry(),
		toolCalls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tollgate_tool_calls_total", Help: "MCP tool calls by tool and outcome (ok, error, refused).",
		}, []string{"tool", "outcome"}),
		decisions: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "tollgate_policy_decision_seconds", Help: "Cerbos decision latency by resource kind, action and result.", Buckets: latencyBuckets,
		}, []string{"kind", "action", "allowed"}),
		reserves: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "tollgate_budget_reserve_seconds", Help: "Budget reservation latency by outcome (reserved, blocked, error).", Buckets: latencyBuckets,
		}, []string{"outcome"}),
		cloudflare: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "tollgate_cloudflare_request_seconds", Help: "Cloudflare API request latency by method, purpose and status.", Buckets: latencyBuckets,
		}, []string{"method", "purpose", "status"}),
		executions: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "tollgate_execution_seconds", Help: "Execution latency of approved operations by tool and outcome.", Buckets: latencyBuckets,
		}, []string{"tool", "outcome"}),
		pending: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "tollgate_pending_approvals", Help: "Approval requests waiting for a human.",
		}),
	}
	m.registry.MustRegister(m.toolCalls, m.decisions, m.reserves, m.cloudflare, m.executions, m.pending,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "tollgate_cloudflare_tokens_alive", Help: "Cloudflare tokens minted and not yet deleted: per-operation ones and the shared quote token.",
		}, func() float64 { return float64(broker.Alive()) }),
		&spendCollector{db: db},
		&workCollector{db: db, broker: broker, authz: az},
		collectors.NewGoCollector(),
		// process_cpu_seconds_total: `tollgate load` divides it by the calls
		// made, a figure a loaded machine disturbs far less than calls/s.
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	return m
}

// workCollector reports the work counters behind "what one call costs":
// PDP requests and decision-cache hits, ledger write transactions, and the
// Cloudflare request budget and token count.
type workCollector struct {
	db     *ledger.DB
	broker *cloudflare.Broker
	authz  *authz.Client
}

var (
	pdpRequestsDesc = prometheus.NewDesc("tollgate_policy_requests_total", "CheckResources calls sent to the Cerbos PDP (a decision-cache hit sends none).", nil, nil)
	cacheHitsDesc   = prometheus.NewDesc("tollgate_policy_cache_hits_total", "Decisions (resource and action) answered from the decision cache.", nil, nil)
	cacheMissesDesc = prometheus.NewDesc("tollgate_policy_cache_misses_total", "Decisions the decision cache could not answer.", nil, nil)
	writeTxDesc     = prometheus.NewDesc("tollgate_ledger_write_transactions_total", "Write transactions begun on the ledger.", nil, nil)
	groupedDesc     = prometheus.NewDesc("tollgate_ledger_grouped_writes_total", "Ledger writes the group writer carried in those transactions (several concurrent writes share one).", nil, nil)
	cfWindowDesc    = prometheus.NewDesc("tollgate_cloudflare_requests_in_window", "Cloudflare API requests sent in the current rate-limit window, by token (parent = the parent token).", []string{"token_id"}, nil)
	cfLimitDesc     = prometheus.NewDesc("tollgate_cloudflare_rate_limit", "Cloudflare API requests allowed per window (configured, or as Cloudflare reported).", nil, nil)
	cfRefusedDesc   = prometheus.NewDesc("tollgate_cloudflare_requests_refused_total", "Requests tollgate refused to send to stay inside Cloudflare's rate limit or token cap.", nil, nil)
	cfTokensDesc    = prometheus.NewDesc("tollgate_cloudflare_account_tokens", "API tokens the Cloudflare account holds (-1 until counted), against tollgate_cloudflare_token_cap.", nil, nil)
	cfTokenCapDesc  = prometheus.NewDesc("tollgate_cloudflare_token_cap", "API tokens the Cloudflare account may hold.", nil, nil)
)

func (c *workCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{pdpRequestsDesc, cacheHitsDesc, cacheMissesDesc, writeTxDesc, groupedDesc, cfWindowDesc, cfLimitDesc, cfRefusedDesc, cfTokensDesc, cfTokenCapDesc} {
		ch <- d
	}
}

func (c *workCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.authz.Stats()
	ch <- prometheus.MustNewConstMetric(pdpRequestsDesc, prometheus.CounterValue, float64(st.Requests))
	ch <- prometheus.MustNewConstMetric(cacheHitsDesc, prometheus.CounterValue, float64(st.CacheHits))
	ch <- prometheus.MustNewConstMetric(cacheMissesDesc, prometheus.CounterValue, float64(st.CacheMisses))
	ch <- prometheus.MustNewConstMetric(writeTxDesc, prometheus.CounterValue, float64(c.db.Store().WriteTransactions()))
	ch <- prometheus.MustNewConstMetric(groupedDesc, prometheus.CounterValue, float64(c.db.Store().GroupedWrites()))
	u := c.broker.Usage()
	for id, n := range u.PerToken {
		ch <- prometheus.MustNewConstMetric(cfWindowDesc, prometheus.GaugeValue, float64(n), id)
	}
	ch <- prometheus.MustNewConstMetric(cfLimitDesc, prometheus.GaugeValue, float64(u.RateLimit))
	ch <- prometheus.MustNewConstMetric(cfRefusedDesc, prometheus.CounterValue, float64(u.Refused))
	ch <- prometheus.MustNewConstMetric(cfTokensDesc, prometheus.GaugeValue, float64(u.AccountTokens))
	ch <- prometheus.MustNewConstMetric(cfTokenCapDesc, prometheus.GaugeValue, float64(u.TokenCap))
}

func (m *metrics) observeTool(tool, outcome string) {
	if m != nil {
		m.toolCalls.WithLabelValues(tool, outcome).Inc()
	}
}

func (m *metrics) observeDecision(kind, action string, allowed bool, d time.Duration) {
	if m == nil {
		return
	}
	a := "false"
	if allowed {
		a = "true"
	}
	m.decisions.WithLabelValues(kind, action, a).Observe(d.Seconds())
}

func (m *metrics) observeReserve(err error, d time.Duration) {
	if m == nil {
		return
	}
	outcome := "reserved"
	if err != nil {
		outcome = "error"
		if _, ok := err.(*ledger.BlockedError); ok {
			outcome = "blocked"
		}
	}
	m.reserves.WithLabelValues(outcome).Observe(d.Seconds())
}

func (m *metrics) observeCloudflare(r cloudflare.RequestRecord) {
	if m == nil {
		return
	}
	status := "error"
	if r.Status > 0 {
		status = statusClass(r.Status)
	}
	m.cloudflare.WithLabelValues(r.Method, string(r.Purpose), status).Observe(r.Duration.Seconds())
}

func (m *metrics) observeExecution(tool string, err error, d time.Duration) {
	if m == nil {
		return
	}
	outcome := "ok"
	if err != nil {
		outcome = "error"
	}
	m.executions.WithLabelValues(tool, outcome).Observe(d.Seconds())
}

func (m *metrics) setPending(n int) {
	if m != nil {
		m.pending.Set(float64(n))
	}
}

func statusClass(code int) string {
	return string(rune('0'+code/100)) + "xx"
}

// spendCollector reports spent and held per budget from the ledger at scrape time.
type spendCollector struct{ db *ledger.DB }

var (
	spentDesc = prometheus.NewDesc("tollgate_budget_spent", "Spent in the current window, in currency units.", []string{"scope", "window", "currency"}, nil)
	heldDesc  = prometheus.NewDesc("tollgate_budget_held", "Held by operations in progress, in currency units.", []string{"scope", "window", "currency"}, nil)
	limitDesc = prometheus.NewDesc("tollgate_budget_limit", "Budget limit, in currency units.", []string{"scope", "window", "currency"}, nil)
)

func (c *spendCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- spentDesc
	ch <- heldDesc
	ch <- limitDesc
}

func (c *spendCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	sts, err := c.db.BudgetStatuses(ctx) // every budget
	if err != nil {
		return
	}
	for _, s := range sts {
		labels := []string{string(s.Budget.Scope), string(s.Budget.Window), s.Budget.Limit.Currency}
		ch <- prometheus.MustNewConstMetric(spentDesc, prometheus.GaugeValue, float64(s.Spent.Micros)/1e6, labels...)
		ch <- prometheus.MustNewConstMetric(heldDesc, prometheus.GaugeValue, float64(s.Held.Micros)/1e6, labels...)
		ch <- prometheus.MustNewConstMetric(limitDesc, prometheus.GaugeValue, float64(s.Budget.Limit.Micros)/1e6, labels...)
	}
}
