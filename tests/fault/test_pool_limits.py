"""Pool limits against members who hold connections: [pool] max_agents is
enforced at JOIN (before a token use is spent), and a connection that got
past the handshake but never sends JOIN is closed after work_timeout.
Asserted: a probe that never joins is cut off ("no JOIN in time", one
'no-join' rejection row); with max_agents = 2, a third agent is refused
("the pool is full") while two train, only two agents' updates are applied,
and the run applies every minibatch exactly once."""
import gppool
from flood import start_probe
from gppool import check, log
from test_hostile_members import hostile_bin


def test():
    with gppool.Pool("pool-limits", train={"epochs": 2},
                     pool={"max_agents": 2, "work_timeout": "5s"}) as pool:
        pool.serve()
        token = pool.invite(uses=1)
        probe = start_probe(hostile_bin(), token, 15000)
        agents = pool.agents(3, prefix="honest")
        # The probe is cut off before anyone trains: a 2-epoch job can be
        # over before work_timeout, and the probe must not race it.
        out, err = probe.communicate(timeout=120)
        log("probe: rc %d: %s" % (probe.returncode, out.strip()))
        check(probe.returncode == 1 and "no JOIN in time" in out,
              "the probe that never joined was not cut off: %s %s" %
              (out, err))
        for a in agents:
            a.run()
        pool.wait_serve(600)
        pool.check_exactly_once()
        full = pool.serve_proc.stderr().count("the pool is full")
        log("'the pool is full' %d time(s)" % full)
        check(full >= 1, "no JOIN was refused with max_agents = 2")
        n = pool.query("SELECT count(DISTINCT agent_id) FROM updates WHERE"
                       " outcome = 'applied'")[0][0]
        check(n == 2, "%d agents had updates applied, max_agents is 2" % n)
        rows = pool.query("SELECT count(*) FROM rejections WHERE kind ="
                          " 'no-join'")[0][0]
        check(rows == 1, "%d 'no-join' rejection rows" % rows)


if __name__ == "__main__":
    gppool.main(test)
