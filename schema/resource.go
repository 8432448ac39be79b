// Package schema defines NxMesh's resource model: the declarative document
// format (apiVersion nxmesh/v1), the kinds and their specs, strict
// grammar-based validation, and the SQL migrations the store runs (embedded).
// It is a leaf: it imports nothing else of NxMesh and knows nothing of nginx,
// SQL drivers or the network.
package schema

// APIVersion is the only document version this build reads and writes.
const APIVersion = "nxmesh/v1"

// Kind names a resource type.
type Kind string

// The kinds this build knows.
const (
	KindUpstream    Kind = "Upstream"
	KindVirtualHost Kind = "VirtualHost"
	KindCertificate Kind = "Certificate"
)

// Kinds lists every known kind in a stable order.
var Kinds = []Kind{KindCertificate, KindUpstream, KindVirtualHost}

// Metadata identifies a resource within its workspace.
type Metadata struct {
	Name   string            `json:"name"`
	Labels map[string]string `json:"labels,omitempty"`
}

// Resource is one document: its kind, metadata and a typed spec. Spec holds
// *UpstreamSpec, *VirtualHostSpec or *CertificateSpec, matching Kind.
type Resource struct {
	APIVersion string   `json:"apiVersion"`
	Kind       Kind     `json:"kind"`
	Metadata   Metadata `json:"metadata"`
	Spec       Spec     `json:"spec"`

	// Source says where the resource was decoded from, so that errors can
	// name the file and document. It is not part of the JSON form.
	Source Source `json:"-"`
}

// Source is the place a resource was read from.
type Source struct {
	// File is the name given to Decode.
	File string
	// Document is the 1-based position of the document in File (empty
	// documents count), or 0 when unknown.
	Document int
}

// Spec is the kind-specific part of a resource.
type Spec interface {
	// Kind reports which kind the spec belongs to.
	Kind() Kind
}

// Duration is an nginx time value such as "500ms", "10s", "5m", "1h" or "1d".
type Duration string

// Size is an nginx size value such as "512", "64k", "10m" or "1g".
type Size string

// UpstreamSpec is a group of backend servers that locations proxy to.
type UpstreamSpec struct {
	Servers       []UpstreamServer `json:"servers"`
	LoadBalancing LoadBalancing    `json:"loadBalancing,omitempty"`
	// HashKey is the nginx variable hashed when LoadBalancing is "hash";
	// only variables from an allowed list are accepted.
	HashKey   string   `json:"hashKey,omitempty"`
	Keepalive int      `json:"keepalive,omitempty"`
	Retries   *Retries `json:"retries,omitempty"`
}

// Kind implements Spec.
func (*UpstreamSpec) Kind() Kind { return KindUpstream }

// LoadBalancing selects nginx's balancing method for an upstream.
type LoadBalancing string

// Balancing methods; the empty value means round robin.
const (
	RoundRobin         LoadBalancing = "round_robin"
	LeastConn          LoadBalancing = "least_conn"
	IPHash             LoadBalancing = "ip_hash"
	Hash               LoadBalancing = "hash"
	RandomTwoLeastConn LoadBalancing = "random_two_least_conn"
)

// UpstreamServer is one backend: "host:port", "[v6]:port" or "unix:/path".
type UpstreamServer struct {
	Address     string   `json:"address"`
	Weight      int      `json:"weight,omitempty"`
	MaxFails    *int     `json:"maxFails,omitempty"`
	FailTimeout Duration `json:"failTimeout,omitempty"`
	Backup      bool     `json:"backup,omitempty"`
	Down        bool     `json:"down,omitempty"`
}

// Retries controls proxy_next_upstream for locations that use the upstream.
type Retries struct {
	Tries   int      `json:"tries,omitempty"`
	Timeout Duration `json:"timeout,omitempty"`
	// On lists the conditions that move a request to the next server:
	// error, timeout, invalid_header, http_500, http_502, http_503,
	// http_504, http_403, http_404, http_429, non_idempotent.
	On []string `json:"on,omitempty"`
}

// VirtualHostSpec is one nginx server block.
type VirtualHostSpec struct {
	ServerNames []string        `json:"serverNames"`
	Listen      []Listen        `json:"listen,omitempty"`
	TLS         *VirtualHostTLS `json:"tls,omitempty"`
	Locations   []Location      `json:"locations"`
	// Headers holds response header rules for the whole server.
	Headers           *Headers  `json:"headers,omitempty"`
	ClientMaxBodySize Size      `json:"clientMaxBodySize,omitempty"`
	Selector          *Selector `json:"selector,omitempty"`
}

// Kind implements Spec.
func (*VirtualHostSpec) Kind() Kind { return KindVirtualHost }

// Listen is one listening port of a virtual host.
type Listen struct {
	Port          int  `json:"port"`
	TLS           bool `json:"tls,omitempty"`
	HTTP2         bool `json:"http2,omitempty"`
	DefaultServer bool `json:"defaultServer,omitempty"`
}

// VirtualHostTLS names the certificate a virtual host serves.
type VirtualHostTLS struct {
	// Certificate is the name of a Certificate resource in the same workspace.
	Certificate  string `json:"certificate"`
	RedirectHTTP bool   `json:"redirectHttp,omitempty"`
	HSTS         *HSTS  `json:"hsts,omitempty"`
}

// HSTS configures the Strict-Transport-Security response header.
type HSTS struct {
	MaxAge            int  `json:"maxAge,omitempty"`
	IncludeSubdomains bool `json:"includeSubdomains,omitempty"`
	Preload           bool `json:"preload,omitempty"`
}

// Match says how a location path is compared with the request URI.
type Match string

// Match kinds; the empty value means prefix.
const (
	MatchPrefix Match = "prefix"
	MatchExact  Match = "exact"
	MatchRegex  Match = "regex"
)

// Location routes requests under a path to exactly one action: Upstream
// (proxy), Return or Static.
type Location struct {
	Path  string `json:"path"`
	Match Match  `json:"match,omitempty"`

	// Upstream names an Upstream resource to proxy to. The fields after it
	// are valid only together with it.
	Upstream      string    `json:"upstream,omitempty"`
	RewritePrefix string    `json:"rewritePrefix,omitempty"`
	WebSocket     bool      `json:"websocket,omitempty"`
	Timeouts      *Timeouts `json:"timeouts,omitempty"`

	Return *Return `json:"return,omitempty"`
	Static *Static `json:"static,omitempty"`

	// Headers holds request rules (proxy only) and response rules.
	Headers           *Headers `json:"headers,omitempty"`
	ClientMaxBodySize Size     `json:"clientMaxBodySize,omitempty"`
}

// Timeouts are the proxy timeouts of a location.
type Timeouts struct {
	Connect Duration `json:"connect,omitempty"`
	Read    Duration `json:"read,omitempty"`
	Send    Duration `json:"send,omitempty"`
}

// Return answers directly with a status and either a body or a redirect URL.
type Return struct {
	Status int    `json:"status"`
	Body   string `json:"body,omitempty"`
	URL    string `json:"url,omitempty"`
}

// Static serves files from a directory on the nginx host.
type Static struct {
	// Root is an absolute directory under one of the agent's allowed bases.
	Root  string   `json:"root"`
	Index []string `json:"index,omitempty"`
}

// Headers groups request and response header rules.
type Headers struct {
	Request  *HeaderRules `json:"request,omitempty"`
	Response *HeaderRules `json:"response,omitempty"`
}

// HeaderRules add (or set) and remove headers. Values are literal text; a
// value may refer to an allowed nginx variable such as $remote_addr.
type HeaderRules struct {
	Add    map[string]string `json:"add,omitempty"`
	Remove []string          `json:"remove,omitempty"`
}

// Selector picks the agents that serve a virtual host by their labels. A
// missing selector selects every agent of the workspace.
type Selector struct {
	MatchLabels map[string]string `json:"matchLabels,omitempty"`
}

// Matches reports whether an agent with the given labels is selected.
func (s *Selector) Matches(labels map[string]string) bool {
	if s == nil {
		return true
	}
	for k, v := range s.MatchLabels {
		if got, ok := labels[k]; !ok || got != v {
			return false
		}
	}
	return true
}

// RedactedKeyPrefix starts what the API shows in place of a Certificate's
// private key: the key is write-only, and a digest stands in its place.
const RedactedKeyPrefix = "redacted:sha256:"

// CertificateSpec is an uploaded certificate chain and its private key, both
// PEM. The private key is a secret: it is never logged.
type CertificateSpec struct {
	// Certificate is the leaf first, then any intermediates.
	Certificate string `json:"certificate"`
	PrivateKey  string `json:"privateKey"`
}

// Kind implements Spec.
func (*CertificateSpec) Kind() Kind { return KindCertificate }
