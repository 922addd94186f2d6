-- KEYS: circuit hash, probe lock. Returns 1 when the circuit was open.
local was = redis.call('HGET', KEYS[1], 'open_until')
redis.call('DEL', KEYS[1], KEYS[2])
if was and tonumber(was) > 0 then return 1 end
return 0
