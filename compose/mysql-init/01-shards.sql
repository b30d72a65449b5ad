-- The four shard databases, each of which may later move to its own server.
CREATE DATABASE IF NOT EXISTS tdc_shard0 CHARACTER SET utf8mb4;
CREATE DATABASE IF NOT EXISTS tdc_shard1 CHARACTER SET utf8mb4;
CREATE DATABASE IF NOT EXISTS tdc_shard2 CHARACTER SET utf8mb4;
CREATE DATABASE IF NOT EXISTS tdc_shard3 CHARACTER SET utf8mb4;
GRANT ALL PRIVILEGES ON `tdc\_shard%`.* TO 'tdc'@'%';
