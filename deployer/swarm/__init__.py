"""Docker Swarm as a target (``target: swarm`` in the inventory): one stack on
a cluster instead of ``compose up`` on each host.

- :mod:`.topology`: which hosts manage the cluster, and ``check``'s rules;
- :mod:`.stack`: the pure compose -> stack conversion (configs, secrets,
  update policy, refused binds, one-shots taken out as jobs);
- :mod:`.commands`: the swarm commands as data (``Command`` values);
- :mod:`.cluster`: forming the swarm (init, join with tokens never printed);
- :mod:`.gate`: the health gate on services' ``UpdateStatus`` and tasks;
- :mod:`.ship`: the ship job on the first manager, and the day-2 jobs.
"""
