// Package hub is the NxMesh control-plane service: the REST API, the
// embedded certificate authority's HTTP side, authentication, and (in later
// milestones) the config compiler's scheduling, rollouts and the embedded
// relay. Hubs share nothing but the database behind hub/store, so any hub can
// stop at any time. Nothing imports hub except cmd/nxmesh.
package hub
