package approvalsui

import (
	"context"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.temporal.io/api/workflowservice/v1"

	"github.com/airlock-dev/airlock/workflows"
)

// metrics lives in its own registry so that several servers (tests) can
// exist in one process.
type metrics struct {
	reg             *prometheus.Registry
	httpDuration    *prometheus.HistogramVec
	decisionLatency *prometheus.HistogramVec
	decideDuration  prometheus.Histogram
}

func newMetrics(count func(context.Context) (map[string]int64, error)) *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		httpDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "airlock_http_request_duration_seconds",
			Help:    "Duration of HTTP requests to airlock serve, by route.",
			Buckets: prometheus.DefBuckets,
		}, []string{"method", "route", "code"}),
		decisionLatency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "airlock_decision_latency_seconds",
			Help: "Time from approval requested to an accepted decision, by decision.",
			Buckets: []float64{60, 300, 900, 1800, 3600, 4 * 3600, 12 * 3600, 24 * 3600,
				48 * 3600, 72 * 3600, 7 * 24 * 3600},
		}, []string{"decision"}),
		decideDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "airlock_decide_update_duration_seconds",
			Help:    "Round trip of the decide update to the workflow.",
			Buckets: prometheus.DefBuckets,
		}),
	}
	m.reg.MustRegister(m.httpDuration, m.decisionLatency, m.decideDuration,
		newPhaseCollector(count),
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

func (m *metrics) handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError})
}

// phaseCollector counts tasks by phase from Temporal visibility on scrape,
// at most once per cacheFor.
type phaseCollector struct {
	count    func(context.Context) (map[string]int64, error)
	desc     *prometheus.Desc
	errDesc  *prometheus.Desc
	mu       sync.Mutex
	at       time.Time
	last     map[string]int64
	lastErr  error
	cacheFor time.Duration
}

func newPhaseCollector(count func(context.Context) (map[string]int64, error)) *phaseCollector {
	return &phaseCollector{
		count:    count,
		desc:     prometheus.NewDesc("airlock_tasks", "AgentTask workflows by phase (Temporal visibility).", []string{"phase"}, nil),
		errDesc:  prometheus.NewDesc("airlock_tasks_count_error", "1 when the last count from visibility failed.", nil, nil),
		cacheFor: 15 * time.Second,
	}
}

func (p *phaseCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- p.desc
	ch <- p.errDesc
}

func (p *phaseCollector) Collect(ch chan<- prometheus.Metric) {
	p.mu.Lock()
	if p.last == nil || time.Since(p.at) > p.cacheFor {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		counts, err := p.count(ctx)
		cancel()
		p.at, p.lastErr = time.Now(), err
		if err == nil {
			p.last = counts
		}
	}
	counts, err := p.last, p.lastErr
	p.mu.Unlock()
	for _, ph := range Phases {
		if v, ok := counts[ph]; ok {
			ch <- prometheus.MustNewConstMetric(p.desc, prometheus.GaugeValue, float64(v), ph)
		}
	}
	e := 0.0
	if err != nil {
		e = 1
	}
	ch <- prometheus.MustNewConstMetric(p.errDesc, prometheus.GaugeValue, e)
}

// countByPhase asks visibility for the number of tasks in each phase.
func (s *server) countByPhase(ctx context.Context) (map[string]int64, error) {
	out := make(map[string]int64, len(Phases))
	for _, ph := range Phases {
		q := fmt.Sprintf("WorkflowType = '%s' AND %s = '%s'", workflows.WorkflowType, workflows.SAPhase.GetName(), ph)
		resp, err := s.temporal.CountWorkflow(ctx, &workflowservice.CountWorkflowExecutionsRequest{Query: q})
		if err != nil {
			return nil, fmt.Errorf("count tasks in %s: %w", ph, err)
		}
		out[ph] = resp.GetCount()
	}
	return out, nil
}
