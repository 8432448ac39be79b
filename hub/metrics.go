package hub

import (
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// metricsHandler serves the hub's Prometheus metrics: the Go runtime and
// process, and counters read from the store and the fleet when scraped.
func (s *Server) metricsHandler() http.Handler {
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "nxmesh_store_write_transactions_total",
			Help: "Write transactions committed to the store (a batch of many rows is one).",
		}, func() float64 { return float64(s.db.Stats().Writes) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "nxmesh_store_retries_total",
			Help: "Store transactions rerun after a serialization failure.",
		}, func() float64 { return float64(s.db.Stats().Retries) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "nxmesh_fleet_relays",
			Help: "Relay sessions held by this hub, its embedded relay included.",
		}, func() float64 { return float64(s.fleet.Stats().Relays) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "nxmesh_fleet_agents",
			Help: "Agent sessions on the relays connected to this hub.",
		}, func() float64 { return float64(s.fleet.Stats().Agents) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "nxmesh_fleet_assignments_total",
			Help: "Desired-bundle assignments sent to relays.",
		}, func() float64 { return float64(s.fleet.Stats().Pushes) }),
	)
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{})
}
