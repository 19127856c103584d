// Answers "is the broker serving metadata yet?" for scripts/kafka.sh: exits 0 once a
// real metadata request to the given bootstrap server returns at least one broker.
// A third argument names a client properties file (the secure broker's admin).
import java.io.FileReader;
import java.util.Properties;
import java.util.concurrent.TimeUnit;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;

public class Probe {
    public static void main(String[] args) throws Exception {
        Properties props = new Properties();
        if (args.length > 2) {
            try (FileReader in = new FileReader(args[2])) {
                props.load(in);
            }
        }
        props.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, args[0]);
        props.put(AdminClientConfig.REQUEST_TIMEOUT_MS_CONFIG, "3000");
        props.put(AdminClientConfig.DEFAULT_API_TIMEOUT_MS_CONFIG, "5000");
        long deadline = System.currentTimeMillis() + Long.parseLong(args[1]) * 1000L;
        try (Admin admin = Admin.create(props)) {
            while (System.currentTimeMillis() < deadline) {
                try {
                    int nodes = admin.describeCluster().nodes().get(5, TimeUnit.SECONDS).size();
                    if (nodes > 0) {
                        System.out.println("broker ready: " + nodes + " node(s)");
                        return;
                    }
                } catch (Exception e) {
                    Thread.sleep(500);
                }
            }
        }
        System.err.println("broker did not answer a metadata request in time");
        System.exit(1);
    }
}
