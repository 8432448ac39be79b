package nginx

// Every user-supplied value that reaches a generated file passes through
// exactly one function of this file, chosen by the kind of token it becomes.
// Each function either returns the token ready to write (bare only when its
// grammar cannot hold nginx syntax, double-quoted otherwise) or an error; it
// never tries to repair a value. The schema package validates the same
// values with user-friendly messages first: these checks are the second
// line, so that a value that slipped past validation (a new code path, a
// stored resource from an older build) cannot end a directive, open a block,
// start a comment or name an nginx variable we did not choose.

import (
	"errors"
	"fmt"
	"net/netip"
	"path"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/nxmesh/nxmesh/schema"
)

// errControl is returned for values holding characters no quoted nginx
// string may carry.
var errControl = errors.New("contains a control character or invalid UTF-8")

// maxToken bounds any single token we write.
const maxToken = 8192

// quoteString returns s as an nginx double-quoted string. nginx's tokenizer
// (ngx_conf_read_token) unescapes \" \' \\ \t \r \n in every word, so
// escaping "\" and `"` makes the token read back byte for byte. Control
// characters are refused: no directive we write takes them. s must not
// contain "$" unless the directive does not interpolate variables or the
// caller checked them (see quoteValue).
func quoteString(s string) (string, error) {
	return quote(s, false)
}

// quoteBody is quoteString for a return body, which may hold newlines
// (written as \n).
func quoteBody(s string) (string, error) {
	q, err := quote(s, true)
	if err != nil {
		return "", err
	}
	if err := checkVariables(s); err != nil {
		return "", err
	}
	return q, nil
}

// quoteValue quotes a value of a directive that interpolates nginx
// variables (add_header, proxy_set_header, return): every "$" must start one
// of the allowed variables, because nginx has no way to write a literal "$".
func quoteValue(s string) (string, error) {
	if err := checkVariables(s); err != nil {
		return "", err
	}
	return quote(s, false)
}

// quoteLiteral quotes a value of a directive that interpolates variables
// but must not use any (proxy_pass URIs).
func quoteLiteral(s string) (string, error) {
	if strings.Contains(s, "$") {
		return "", errors.New("must not contain \"$\"")
	}
	return quote(s, false)
}

func quote(s string, newlines bool) (string, error) {
	if len(s) > maxToken {
		return "", fmt.Errorf("is longer than %d bytes", maxToken)
	}
	if !utf8.ValidString(s) {
		return "", errControl
	}
	var b strings.Builder
	b.Grow(len(s) + 2)
	b.WriteByte('"')
	for _, r := range s {
		switch {
		case r == '"' || r == '\\':
			b.WriteByte('\\')
			b.WriteRune(r)
		case r == '\n' && newlines:
			b.WriteString(`\n`)
		case r < ' ' || r == 0x7f || (r >= 0x80 && r < 0xa0):
			return "", errControl
		default:
			b.WriteRune(r)
		}
	}
	b.WriteByte('"')
	return b.String(), nil
}

// checkVariables checks that every "$" starts an allowed variable; nginx
// reads a variable name greedily as [A-Za-z0-9_]+ and "${" as a braced name,
// which we never allow.
func checkVariables(s string) error {
	if name, found := schema.DisallowedVariable(s); found {
		return fmt.Errorf("uses \"$%s\", which is not an allowed variable", name)
	}
	return nil
}

// quoteRegex quotes a location regex. Beyond quoteString it refuses
// whitespace and "$" anywhere but at the end (the anchor), and "(?" groups,
// since PCRE named captures become nginx variables.
func quoteRegex(s string) (string, error) {
	if s == "" {
		return "", errors.New("is empty")
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c <= ' ' || c >= 0x7f {
			return "", errors.New("may contain only visible ASCII characters")
		}
		if c == '$' && i != len(s)-1 {
			return "", errors.New("may contain \"$\" only as its last character")
		}
	}
	if strings.Contains(s, "(?") {
		return "", errors.New("may not contain \"(?\" groups")
	}
	if _, err := regexp.Compile(s); err != nil {
		return "", fmt.Errorf("is not a valid regular expression: %w", err)
	}
	return quote(s, false)
}

// uriPathRe is a location or rewrite path: "/" then RFC 3986 pchar without
// "'", ";" and "$".
var uriPathRe = regexp.MustCompile(`^/([A-Za-z0-9\-._~!&()*+,=:@/]|%[0-9A-Fa-f]{2})*$`)

// quotePath quotes a prefix or exact location path, or a rewrite prefix.
func quotePath(s string) (string, error) {
	if len(s) > 1024 || !uriPathRe.MatchString(s) {
		return "", errors.New("is not a path of RFC 3986 characters starting with \"/\"")
	}
	return quote(s, false)
}

// fsPathRe is a file system path we are willing to write.
var fsPathRe = regexp.MustCompile(`^/[A-Za-z0-9._/-]*$`)

// quoteFSPath quotes an absolute, clean directory path (static roots, the
// include root).
func quoteFSPath(s string) (string, error) {
	if len(s) > 1024 || !fsPathRe.MatchString(s) || path.Clean(s) != s || strings.Contains(s, "..") {
		return "", errors.New("is not an absolute, clean path of A-Z a-z 0-9 . _ / -")
	}
	return quote(s, false)
}

// fileNameRe is a simple file name (index directive).
var fileNameRe = regexp.MustCompile(`^[A-Za-z0-9_-][A-Za-z0-9._-]{0,254}$`)

// quoteFileName quotes a file name without directory.
func quoteFileName(s string) (string, error) {
	if !fileNameRe.MatchString(s) {
		return "", errors.New("is not a simple file name")
	}
	return quote(s, false)
}

// hostLabelRe is one RFC 1123 hostname label.
var hostLabelRe = regexp.MustCompile(`^[A-Za-z0-9]([-A-Za-z0-9]*[A-Za-z0-9])?$`)

// serverName returns a server_name argument, bare: an RFC 1123 hostname
// with an optional leading "*." wildcard. A bare token is safe because the
// grammar holds nothing but letters, digits, "-", "." and a leading "*".
func serverName(s string) (string, error) {
	host := strings.TrimPrefix(s, "*.")
	if host == "" || len(s) > 253 {
		return "", errors.New("is not a valid hostname")
	}
	for label := range strings.SplitSeq(host, ".") {
		if len(label) > 63 || !hostLabelRe.MatchString(label) {
			return "", errors.New("is not a valid hostname")
		}
	}
	return s, nil
}

// headerNameRe is an RFC 9110 token.
var headerNameRe = regexp.MustCompile("^[!#$%&'*+\\-.^_`|~0-9A-Za-z]{1,256}$")

// headerName returns a header name, quoted (a token may hold "#", "'" and
// "$", which mean something to nginx bare).
func headerName(s string) (string, error) {
	if !headerNameRe.MatchString(s) {
		return "", errors.New("is not a valid header name")
	}
	return quote(s, false)
}

// resourceNameRe is an RFC 1123 label, the grammar of resource names.
var resourceNameRe = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$`)

// resourceName checks a resource name, used bare in upstream names and in
// bundle file paths.
func resourceName(s string) (string, error) {
	if !resourceNameRe.MatchString(s) {
		return "", errors.New("is not a valid resource name")
	}
	return s, nil
}

// upstreamName is the nginx name of an Upstream resource: prefixed so that a
// user's name never collides with an upstream the operator defines.
func upstreamName(s string) (string, error) {
	n, err := resourceName(s)
	if err != nil {
		return "", err
	}
	return "nx_" + n, nil
}

var (
	durationRe = regexp.MustCompile(`^[0-9]{1,9}(ms|s|m|h|d)$`)
	sizeRe     = regexp.MustCompile(`^[0-9]{1,9}[kKmMgG]?$`)
)

// duration returns an nginx time value, bare.
func duration(s string) (string, error) {
	if !durationRe.MatchString(s) {
		return "", errors.New("is not a valid duration")
	}
	return s, nil
}

// size returns an nginx size value, bare.
func size(s string) (string, error) {
	if !sizeRe.MatchString(s) {
		return "", errors.New("is not a valid size")
	}
	return s, nil
}

// integer returns n in decimal if lo <= n <= hi.
func integer(n, lo, hi int) (string, error) {
	if n < lo || n > hi {
		return "", fmt.Errorf("must be from %d to %d, got %d", lo, hi, n)
	}
	return strconv.Itoa(n), nil
}

var unixPathRe = regexp.MustCompile(`^/[A-Za-z0-9._/-]{1,106}$`)

// address returns an upstream server address, bare: host:port with an
// RFC 1123 hostname or IPv4 address, [ipv6]:port, or unix:/path.
func address(s string) (string, error) {
	bad := errors.New("is not a valid address; use host:port, [ipv6]:port or unix:/absolute/path")
	if p, ok := strings.CutPrefix(s, "unix:"); ok {
		if !unixPathRe.MatchString(p) || path.Clean(p) != p || strings.Contains(p, "..") {
			return "", bad
		}
		return s, nil
	}
	if ap, err := netip.ParseAddrPort(s); err == nil {
		if ap.Port() == 0 || ap.Addr().Zone() != "" || ap.String() != s {
			return "", bad
		}
		return s, nil
	}
	i := strings.LastIndexByte(s, ':')
	if i < 0 {
		return "", bad
	}
	host, port := s[:i], s[i+1:]
	if _, err := serverName(host); err != nil || strings.HasPrefix(host, "*.") {
		return "", bad
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 || strconv.Itoa(n) != port {
		return "", bad
	}
	return s, nil
}

// hashKeyRe is the grammar of an upstream hash key: one nginx variable.
var hashKeyRe = regexp.MustCompile(`^\$[A-Za-z0-9_]{1,128}$`)

// hashKey returns a hash key, bare. The schema restricts which variables
// are allowed; here we only make sure it is one variable.
func hashKey(s string) (string, error) {
	if !hashKeyRe.MatchString(s) {
		return "", errors.New("is not a single nginx variable")
	}
	return s, nil
}

// retryConditions are the proxy_next_upstream conditions we write.
var retryConditions = []string{"error", "timeout", "invalid_header", "http_500", "http_502", "http_503", "http_504", "http_403", "http_404", "http_429", "non_idempotent"}

// retryCondition returns a proxy_next_upstream condition, bare.
func retryCondition(s string) (string, error) {
	if !slices.Contains(retryConditions, s) {
		return "", errors.New("is not a retry condition")
	}
	return s, nil
}

// userNameRe is a POSIX-ish user name for the user directive.
var userNameRe = regexp.MustCompile(`^[a-z_][a-z0-9_-]{0,31}$`)

// userName returns the argument of the user directive, bare.
func userName(s string) (string, error) {
	if !userNameRe.MatchString(s) {
		return "", errors.New("is not a valid user name")
	}
	return s, nil
}

// listenAddr returns a loopback listen address, bare: 127.0.0.1:port or
// [::1]:port style, as the status server listens on loopback only.
func listenAddr(s string) (string, error) {
	ap, err := netip.ParseAddrPort(s)
	if err != nil || ap.Port() == 0 || !ap.Addr().IsLoopback() || ap.Addr().Zone() != "" || ap.String() != s {
		return "", errors.New("must be a loopback address and port, such as 127.0.0.1:8765")
	}
	return s, nil
}
