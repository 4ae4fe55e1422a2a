"""Lambda handlers the tests run as FUNCTION integrations (module:function)."""
