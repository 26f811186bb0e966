// Preloaded with `node --import` before the suite's server/server.mjs, which calls
// server.listen(port) and so would listen on every interface: bind it to loopback
// (CACHE_TESTS_HOST, default 127.0.0.1) without touching the installed package.
import http from 'http'
import https from 'https'

const host = process.env.CACHE_TESTS_HOST || '127.0.0.1'
for (const Server of [http.Server, https.Server]) {
  const listen = Server.prototype.listen
  Server.prototype.listen = function (port, ...rest) {
    if (typeof port === 'number' || typeof port === 'string') {
      return listen.call(this, port, host, ...rest)
    }
    return listen.call(this, port, ...rest)
  }
}
