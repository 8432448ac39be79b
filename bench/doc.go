// Package bench is the load generator behind `nxmesh bench`: it starts (or
// targets) a hub and relays as separate nxmesh processes, runs thousands of
// simulated agents in agent processes beside it (the real agent session
// code with an in-memory applier, each with its own certificate), drives
// scenarios through the hub's REST API, and measures what NxMesh promises:
// handshake rates, push latency, reconnect storms, memory and CPU per
// agent. It imports only wire, pki and agent of NxMesh.
package bench
