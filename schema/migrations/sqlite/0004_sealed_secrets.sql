-- Certificate private keys in resources and resource_history are stored
-- sealed under the installation's secret key from this version on
-- (hub/store/secrets.go); a hub seals the rows older hubs wrote in the clear
-- when it starts. No table changes. The version is what matters: a hub from
-- before sealing refuses this database (its schema is newer than the hub)
-- instead of reading a sealed key as PEM and rendering it for nginx.
SELECT 1;
