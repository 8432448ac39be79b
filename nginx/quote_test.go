package nginx

import "testing"

func TestQuote(t *testing.T) {
	tests := []struct {
		name string
		f    func(string) (string, error)
		in   string
		want string // "" means an error is expected
	}{
		{"string plain", quoteString, "abc", `"abc"`},
		{"string quote and backslash", quoteString, `a"b\c`, `"a\"b\\c"`},
		{"string syntax stays inside", quoteString, "a; } { # b", `"a; } { # b"`},
		{"string newline", quoteString, "a\nb", ""},
		{"string NUL", quoteString, "a\x00", ""},
		{"string DEL", quoteString, "a\x7f", ""},
		{"string C1 control", quoteString, "a\u0085", ""},
		{"string invalid UTF-8", quoteString, "a\xff", ""},
		{"string non-ASCII", quoteString, "é☃", `"é☃"`},
		{"body newline", quoteBody, "ok\n", `"ok\n"`},
		{"body variable", quoteBody, "$host", `"$host"`},
		{"body unknown variable", quoteBody, "$ssl_client_cert", ""},
		{"value braced variable", quoteValue, "${host}", ""},
		{"value http variable", quoteValue, "$http_x_a", `"$http_x_a"`},
		{"value lone dollar", quoteValue, "5$", ""},
		{"literal dollar", quoteLiteral, "http://nx_a/$uri", ""},
		{"regex", quoteRegex, `^/a\.(b|c)$`, `"^/a\\.(b|c)$"`},
		{"regex inner dollar", quoteRegex, `^/a$b`, ""},
		{"regex named group", quoteRegex, `^/(?<x>a)`, ""},
		{"regex space", quoteRegex, `^/a b`, ""},
		{"path", quotePath, "/a/b-c", `"/a/b-c"`},
		{"path semicolon", quotePath, "/a;b", ""},
		{"fs path unclean", quoteFSPath, "/var/www/../etc", ""},
		{"server name wildcard", serverName, "*.example.com", "*.example.com"},
		{"server name space", serverName, "a b", ""},
		{"header name with hash", headerName, "X-#", `"X-#"`},
		{"header name with colon", headerName, "X:", ""},
		{"address v6", address, "[2001:db8::1]:80", "[2001:db8::1]:80"},
		{"address unix", address, "unix:/run/a.sock", "unix:/run/a.sock"},
		{"address with option", address, "10.0.0.1:80 backup", ""},
		{"address no port", address, "10.0.0.1", ""},
		{"hash key", hashKey, "$request_uri", "$request_uri"},
		{"hash key two", hashKey, "$a$b", ""},
		{"listen loopback", listenAddr, "127.0.0.1:8765", "127.0.0.1:8765"},
		{"listen any", listenAddr, "0.0.0.0:8765", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tc.f(tc.in)
			if tc.want == "" {
				if err == nil {
					t.Fatalf("%q accepted as %s", tc.in, got)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Errorf("%q = %s, %v; want %s", tc.in, got, err, tc.want)
			}
		})
	}
}
