"""A Lua filter for Envoy's REST listener: upstream errors reach REST callers as Google's JSON
error, as opsgate's own REST door answers them.

Envoy's grpc_json_transcoder renders an upstream's gRPC error as a bare google.rpc.Status
(`{"code": 5, "message": ..., "details": [...]}`) with gRPC's headers still on the answer. Google's
REST APIs, and opsgate's REST door, answer `{"error": {"code": 404, "message": ..., "status":
"NOT_FOUND", "details": [...]}}`. The filter, first in the chain and so last on the way out,
rewrites the one into the other (it keys on the transcoder's exact rendering: an error status,
`application/json`, a body opening with `{"code":N`), and drops gRPC's headers from every
answer. Answers opsgate refused are Google's error already (`charset=utf-8`) and pass untouched.
"""

from __future__ import annotations

from typing import Any

from gateway.errors import StatusCode
from gateway.rest.status import HTTP_STATUS

_TYPE = "type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua"

_NAMES = ", ".join(f'[{int(code)}] = "{code.name}"' for code in StatusCode if code)
_HTTP = ", ".join(f"[{int(code)}] = {status}" for code, status in HTTP_STATUS.items() if code)

LUA = """
local NAMES = {__NAMES__}
local HTTP = {__HTTP__}

function envoy_on_response(handle)
  local headers = handle:headers()
  headers:remove("grpc-status")
  headers:remove("grpc-message")
  headers:remove("grpc-accept-encoding")
  local http = tonumber(headers:get(":status"))
  if http == nil or http < 400 or headers:get("content-type") ~= "application/json" then
    return
  end
  -- Headers change before the body is read (Envoy takes no header change after that); an
  -- error the transcoder rendered is JSON whatever becomes of its body below.
  headers:replace("content-type", "application/json; charset=utf-8")
  local body = handle:body()
  if body == nil then
    return
  end
  local text = body:getBytes(0, body:length())
  local number, rest = string.match(text, '^{"code":(%d+),?(.*)}%s*$')
  local code = tonumber(number)
  if code == nil or NAMES[code] == nil then
    return
  end
  rest = string.gsub(rest, ',?"details":%[%]', "")
  local fields = '"code":' .. HTTP[code] .. ',"status":"' .. NAMES[code] .. '"'
  if rest ~= "" then
    fields = fields .. "," .. rest
  end
  body:setBytes('{"error":{' .. fields .. '}}')
end
""".replace("__NAMES__", _NAMES).replace("__HTTP__", _HTTP)


def google_errors_filter() -> dict[str, Any]:
    """The http_filters entry (first on the REST listener)."""
    return {
        "name": "envoy.filters.http.lua",
        "typed_config": {"@type": _TYPE, "default_source_code": {"inline_string": LUA}},
    }
